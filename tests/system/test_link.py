"""The limiter's pipelined link to Redis: calls made together leave together, and each still
gets its own reply, its own error and its own deadline; a broken or stalled connection is left."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
import redis.asyncio

from gateway.limits.link import Link

pytestmark = pytest.mark.redis

TIMEOUT = 1.0
MARGIN = 10.0  # generous: the machine may be busy


async def until(condition: Callable[[], bool], deadline: float = 20.0) -> None:
    give_up = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < give_up, "the condition did not hold in time"
        await asyncio.sleep(0.01)


def link_to(url: str, deadline: float = TIMEOUT) -> tuple[redis.asyncio.Redis, Link]:
    client = redis.asyncio.Redis.from_url(url, protocol=2, driver_info=None)  # as connect_redis
    assert Link.fits(client)
    return client, Link(client, deadline)


async def test_a_burst_is_pipelined_and_each_call_gets_its_own_reply(proxies, own_redis):
    proxy = await proxies(own_redis.port)
    client, link = link_to(proxy.url)
    try:
        replies = await asyncio.gather(*(link.call("ECHO", f"call-{i}") for i in range(300)))
        assert replies == [f"call-{i}".encode() for i in range(300)]
        assert proxy.count("ECHO") == 300
        # Made in one turn of the loop, they left together: one connection, not three hundred.
        assert proxy.connections == 1
    finally:
        await link.aclose()
        await client.aclose()


async def test_an_error_reply_fails_only_its_own_call(redis_url):
    client, link = link_to(redis_url)
    try:
        calls = [link.call("ECHO", "before"), link.call("EVALSHA", "0" * 40, 0), link.call("PING")]
        before, missing, after = await asyncio.gather(*calls, return_exceptions=True)
        assert (before, after) == (b"before", b"PONG")
        assert isinstance(missing, redis.exceptions.NoScriptError)
    finally:
        await link.aclose()
        await client.aclose()


async def test_a_caller_that_gives_up_leaves_the_others_their_replies(proxies, own_redis):
    proxy = await proxies(own_redis.port, lambda index, name: 0.5 if name == "ECHO" else 0.0)
    client, link = link_to(proxy.url, deadline=MARGIN)
    try:
        impatient = asyncio.create_task(link.call("ECHO", "impatient"))
        patient = asyncio.create_task(link.call("ECHO", "patient"))
        await until(lambda: proxy.count("ECHO") == 2)  # both sent, their replies on the way
        impatient.cancel()
        assert await patient == b"patient"
        assert impatient.cancelled()
        assert await link.call("PING") == b"PONG"  # the connection still reads in step
    finally:
        await link.aclose()
        await client.aclose()


async def test_callers_that_hang_up_on_a_stalled_redis_leave_no_connections_open(
    proxies, own_redis
):
    """A batch nobody waits for any more is dropped at once, not read to its deadline."""
    proxy = await proxies(own_redis.port, lambda index, name: 60.0 if name == "ECHO" else 0.0)
    client, link = link_to(proxy.url, deadline=60.0)
    try:
        for turn in range(20):
            calls = [asyncio.create_task(link.call("ECHO", f"{turn}-{i}")) for i in range(4)]
            sent = 4 * (turn + 1)
            await until(lambda sent=sent: proxy.count("ECHO") == sent)
            for call in calls:
                call.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
        await until(lambda: proxy.open_connections <= 1)
    finally:
        await link.aclose()
        await client.aclose()


async def test_a_link_closed_with_calls_in_flight_fails_them_and_takes_no_more(proxies, own_redis):
    proxy = await proxies(own_redis.port, lambda index, name: 60.0 if name == "ECHO" else 0.0)
    client, link = link_to(proxy.url, deadline=60.0)
    try:
        sent = [asyncio.create_task(link.call("ECHO", str(i))) for i in range(3)]
        await until(lambda: proxy.count("ECHO") == 3)
        queued = asyncio.create_task(link.call("ECHO", "queued"))
        await link.aclose()
        outcomes = await asyncio.gather(*sent, queued, return_exceptions=True)
        assert all(isinstance(o, redis.exceptions.ConnectionError) for o in outcomes), outcomes
        with pytest.raises(redis.exceptions.ConnectionError):
            await link.call("PING")
        await until(lambda: proxy.open_connections == 0)
    finally:
        await client.aclose()


async def test_connections_that_failed_to_open_are_not_kept_half_read(own_redis):
    admin = redis.asyncio.Redis.from_url(own_redis.url)
    client, link = link_to(own_redis.url)
    try:
        await admin.ping()
        await admin.config_set("maxclients", 3)  # the admin's, and two of the link's five
        with pytest.raises(redis.exceptions.RedisError):
            await link.open(5)
        await admin.config_set("maxclients", 1000)
        replies = await asyncio.gather(*(link.call("ECHO", str(i)) for i in range(20)))
        assert replies == [str(i).encode() for i in range(20)]
        assert [await link.call("PING") for _ in range(6)] == [b"PONG"] * 6
    finally:
        await link.aclose()
        await client.aclose()
        await admin.aclose()


async def test_a_broken_connection_is_left_and_the_calls_sent_once_more(redis_url):
    client, link = link_to(redis_url)
    killer = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert await link.call("CLIENT", "SETNAME", "gateway-link-test") == b"OK"
        # The idle connection is closed under the link, as a Redis restart or a proxy would.
        assert await killer.client_kill_filter(_type="normal", skipme=True) >= 1
        replies = await asyncio.gather(*(link.call("ECHO", str(i)) for i in range(20)))
        assert replies == [str(i).encode() for i in range(20)]
    finally:
        await killer.aclose()
        await link.aclose()
        await client.aclose()


async def test_a_stalled_redis_fails_the_batch_at_its_deadline_and_holds_nothing(
    proxies, own_redis
):
    stalled = {"now": True}
    policy = lambda index, name: 3 * TIMEOUT if stalled["now"] and name == "ECHO" else 0.0  # noqa: E731
    proxy = await proxies(own_redis.port, policy)
    client, link = link_to(proxy.url)
    try:
        started = time.monotonic()
        outcomes = await asyncio.gather(
            *(link.call("ECHO", str(i)) for i in range(50)), return_exceptions=True
        )
        assert all(isinstance(outcome, TimeoutError) for outcome in outcomes)
        assert time.monotonic() - started < 3 * TIMEOUT  # the batch's deadline, not the stall's
        stalled["now"] = False
        assert await link.call("ECHO", "back") == b"back"
    finally:
        await link.aclose()
        await client.aclose()


async def test_open_readies_its_connections(proxies, own_redis):
    proxy = await proxies(own_redis.port)
    client, link = link_to(proxy.url)
    try:
        await link.open(5)
        assert (proxy.connections, proxy.commands) == (5, ["PING"] * 5)
    finally:
        await link.aclose()
        await client.aclose()
