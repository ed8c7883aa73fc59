"""The limiter's own way to one Redis: commands packed here, pipelined on connections of our own."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, NamedTuple, TypeGuard

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


class Queued(NamedTuple):
    """A command waiting to leave, and the future its caller awaits."""

    command: bytes
    future: asyncio.Future[Any]


class Link:
    """Commands sent straight on connections of our own to one Redis.

    The commands callers send in one turn of the event loop leave together, in one write on one
    connection, and their replies are read back in order: under load, many decisions share the
    system calls of one round trip, and Redis reads them in one go. Each command is still its
    own call, with its own reply (an error reply fails only its caller).

    It spares each call what redis-py's client does around a command (its pool's locks, its
    retry wrapper, a timeout task for the write and another for the read). The caller bounds
    its own wait; a batch gives up after `timeout` (REDIS_CALL_TIMEOUT), or as soon as every
    one of its callers has, and drops its connection: a batch in flight always has a caller
    waiting, so there are never more connections in use than calls in flight. Like the client,
    a batch whose connection breaks sends what is still unanswered once more, on a new
    connection: the limiter's scripts are idempotent per call.
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
        self._closed = False

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
        packed = pack(command)
        if self._closed:
            raise RedisConnectionError("the limiter's link to Redis is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queued:
            # Its first step runs once this turn of the loop is over: every call made meanwhile
            # leaves with this one.
            task = loop.create_task(self._send())
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
        self._queued.append(Queued(packed, future))
        return await future

    async def open(self, count: int) -> None:
        """Open `count` connections (each answers a PING), for a first burst to find ready.
        Only those that answered are kept; the first failure is raised once all have settled."""
        opened = [self._connection() for _ in range(count)]
        outcomes = await asyncio.gather(*(_ping(c) for c in opened), return_exceptions=True)
        for connection, outcome in zip(opened, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                await connection.disconnect()
            self._idle.append(connection)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    def _connection(self) -> AbstractConnection:
        if self._idle:
            return self._idle.pop()
        connection = self._new()
        self._every.append(connection)
        return connection

    async def _send(self) -> None:
        # Calls given up before they could leave are not sent at all.
        batch = [queued for queued in self._queued if not queued.future.done()]
        self._queued = []
        if not batch:
            return
        task = asyncio.current_task()
        assert task is not None
        waiting = len(batch)

        def given_up(_: object) -> None:
            nonlocal waiting
            waiting -= 1
            if waiting == 0 and not task.done():
                task.cancel()  # nobody waits: the connection is dropped, not read to the end

        for queued in batch:
            queued.future.add_done_callback(given_up)
        connection = self._connection()
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    await _exchange(connection, batch)
                except RedisConnectionError:
                    await connection.disconnect()
                    await _exchange(connection, [q for q in batch if not q.future.done()])
        except Exception as exc:
            # redis-py has dropped a connection that failed or was given up mid-read; it
            # connects again on its next use.
            _fail(batch, exc)
        except asyncio.CancelledError:
            _fail(batch, RedisConnectionError("the limiter's link to Redis is closing"))
            raise
        finally:
            self._idle.append(connection)

    async def aclose(self) -> None:
        self._closed = True
        _fail(self._queued, RedisConnectionError("the limiter's link to Redis is closed"))
        self._queued = []
        while self._batches:
            for task in list(self._batches):
                task.cancel()
            await asyncio.gather(*self._batches, return_exceptions=True)
        every, self._every, self._idle = self._every, [], []
        for connection in every:
            await connection.disconnect()


async def _exchange(connection: AbstractConnection, batch: list[Queued]) -> None:
    if not batch:
        return
    await connection.send_packed_command(b"".join(q.command for q in batch), check_health=False)
    for queued in batch:
        try:
            reply = await connection.read_response()
        except ResponseError as exc:
            # An error reply (NOSCRIPT, say) is its caller's alone; the rest read on.
            if not queued.future.done():
                queued.future.set_exception(exc)
            continue
        if not queued.future.done():
            queued.future.set_result(reply)


def _fail(batch: list[Queued], exc: Exception) -> None:
    for queued in batch:
        if not queued.future.done():
            queued.future.set_exception(exc)


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
