"""The limiter's own way to one Redis: commands packed here, pipelined on connections of our own."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, TypeGuard

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

# A command waiting to leave: its bytes, and the future its caller awaits.
Queued = tuple[bytes, "asyncio.Future[Any]"]


class Link:
    """Commands sent straight on connections of our own to one Redis.

    The commands callers send in one turn of the event loop leave together, in one write on one
    connection, and their replies are read back in order: under load, many decisions share the
    system calls of one round trip, and Redis reads them in one go. Each command is still its
    own call, with its own reply (an error reply fails only its caller).

    It spares each call what redis-py's client does around a command (its pool's locks, its
    retry wrapper, a timeout task for the write and another for the read). The caller bounds
    its own wait; a batch gives up after `timeout` (REDIS_CALL_TIMEOUT) and drops its
    connection, so a stalled Redis holds no connection for longer than its callers wait. Like
    the client, a batch whose connection breaks sends what is still unanswered once more, on a
    new connection: the limiter's scripts are idempotent per call.
    """

    def __init__(self, redis: Redis, timeout: float) -> None:
        pool = redis.connection_pool
        # The client's settings, but no per-read or per-write timeout: the batch's deadline.
        self._new = partial(
            pool.connection_class, **{**pool.connection_kwargs, "socket_timeout": None}
        )
        self.timeout = timeout
        self._idle: list[AbstractConnection] = []
        self._every: list[AbstractConnection] = []
        self._queued: list[Queued] = []
        self._batches: set[asyncio.Task[None]] = set()

    @staticmethod
    def fits(redis: Redis | RedisCluster) -> TypeGuard[Redis]:
        """Whether the client talks to one Redis over redis-py's own connections (not a Cluster,
        not a stand-in such as fakeredis)."""
        return isinstance(redis, Redis) and redis.connection_pool.connection_class in (
            Connection,
            SSLConnection,
            UnixDomainSocketConnection,
        )

    async def call(self, *command: str | int) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queued:
            # Its first step runs once this turn of the loop is over: every call made meanwhile
            # leaves with this one.
            task = loop.create_task(self._send())
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
        self._queued.append((pack(command), future))
        return await future

    async def open(self, count: int) -> None:
        """Open `count` connections (each answers a PING), for a first burst to find ready."""
        opened = [self._connection() for _ in range(count)]
        try:
            await asyncio.gather(*(_ping(connection) for connection in opened))
        finally:
            self._idle += opened

    def _connection(self) -> AbstractConnection:
        if self._idle:
            return self._idle.pop()
        connection = self._new()
        self._every.append(connection)
        return connection

    async def _send(self) -> None:
        batch, self._queued = self._queued, []
        connection = self._connection()
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    await self._exchange(connection, batch)
                except RedisConnectionError:
                    await connection.disconnect()
                    await self._exchange(connection, [q for q in batch if not q[1].done()])
        except Exception as exc:
            # redis-py has dropped a connection that failed or was given up mid-read; it
            # connects again on its next use.
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        except BaseException:
            for _, future in batch:
                future.cancel()
            raise
        finally:
            self._idle.append(connection)

    @staticmethod
    async def _exchange(connection: AbstractConnection, batch: list[Queued]) -> None:
        if not batch:
            return
        await connection.send_packed_command(b"".join(q[0] for q in batch), check_health=False)
        for _, future in batch:
            try:
                reply = await connection.read_response()
            except ResponseError as exc:
                # An error reply (NOSCRIPT, say) is its caller's alone; the rest read on.
                if not future.done():
                    future.set_exception(exc)
                continue
            if not future.done():
                future.set_result(reply)

    async def aclose(self) -> None:
        for task in list(self._batches):
            task.cancel()
        for _, future in self._queued:
            future.cancel()
        self._queued = []
        await asyncio.gather(*self._batches, return_exceptions=True)
        every, self._every, self._idle = self._every, [], []
        for connection in every:
            await connection.disconnect()


async def _ping(connection: AbstractConnection) -> None:
    await connection.send_packed_command(pack(("PING",)), check_health=False)
    await connection.read_response()


def pack(command: tuple[str | int, ...]) -> bytes:
    """The command as redis-py's pack_command writes it (RESP, UTF-8), for the only argument types
    the limiter sends, at a quarter of the cost: one string built and encoded once."""
    texts = [
        arg if type(arg) is str else str(arg) if type(arg) is int else _odd(arg) for arg in command
    ]
    line = "".join([f"${len(text)}\r\n{text}\r\n" for text in texts])
    if line.isascii():
        return f"*{len(texts)}\r\n{line}".encode()
    # Lengths count bytes: a key name beyond ASCII is measured encoded.
    encoded = [text.encode() for text in texts]
    return b"".join([b"*%d\r\n" % len(encoded), *(b"$%d\r\n%s\r\n" % (len(e), e) for e in encoded)])


def _odd(arg: object) -> str:
    raise TypeError(f"a Redis command argument must be a str or an int, not {type(arg).__name__}")
