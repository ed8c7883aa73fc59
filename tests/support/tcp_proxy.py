"""A loopback TCP proxy in front of Redis that counts the commands clients send and can hold some
back, to show what the gateway really sends and how it copes with a slow Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# Seconds to hold command number `index` (counted over all connections), named `name`.
DelayPolicy = Callable[[int, str], float]


def split_command(buffer: bytes) -> tuple[bytes, str] | None:
    """The first complete RESP command in buffer, and its name; None if it is not complete."""
    if not buffer.startswith(b"*"):
        line, sep, _ = buffer.partition(b"\r\n")
        return (line + sep, line.split(b" ", 1)[0].decode().upper()) if sep else None
    end = buffer.find(b"\r\n")
    if end < 0:
        return None
    count = int(buffer[1:end])
    position = end + 2
    name = ""
    for index in range(count):
        end = buffer.find(b"\r\n", position)
        if end < 0:
            return None
        length = int(buffer[position + 1 : end])
        start = end + 2
        position = start + length + 2
        if position > len(buffer):
            return None
        if index == 0:
            name = buffer[start : start + length].decode().upper()
    return buffer[:position], name


class RedisProxy:
    def __init__(self, target_port: int, delay: DelayPolicy | None = None) -> None:
        self.target_port = target_port
        self.delay: DelayPolicy = delay or (lambda index, name: 0.0)
        self.commands: list[str] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def open_connections(self) -> int:
        return len(self._tasks)

    def count(self, name: str) -> int:
        return sum(1 for command in self.commands if command == name)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        streams = [writer]
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            streams.append(up_writer)
            back = asyncio.create_task(self._copy(up_reader, writer))
            try:
                await self._forward(reader, up_writer, writer)
            finally:
                back.cancel()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            # Close every socket before awaiting anything, so that a second cancellation cannot
            # leave one open.
            for stream in streams:
                stream.close()
            self._tasks.discard(task)

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
    ) -> None:
        """Each command is held from its arrival for what the delay policy says, as a stalled
        Redis holds every command it has been sent: commands that came together (pipelined)
        are let go together, in order. If the client gives up meanwhile, Redis never sees them."""
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()

        async def read_commands() -> None:
            buffer = b""
            while data := await reader.read(65536):
                buffer += data
                arrived = loop.time()
                while (found := split_command(buffer)) is not None:
                    raw, name = found
                    buffer = buffer[len(raw) :]
                    index = len(self.commands)
                    self.commands.append(name)
                    held.put_nowait((raw, arrived + self.delay(index, name)))

        reading = asyncio.create_task(read_commands())
        try:
            while True:
                waiting = asyncio.ensure_future(held.get())
                await asyncio.wait({waiting, reading}, return_when=asyncio.FIRST_COMPLETED)
                if not waiting.done():
                    waiting.cancel()
                    return  # the client closed, and nothing of it is held
                raw, release = waiting.result()
                if release > loop.time():
                    await asyncio.wait({reading}, timeout=release - loop.time())
                    if reading.done():
                        return
                upstream.write(raw)
                await upstream.drain()
        finally:
            reading.cancel()

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
