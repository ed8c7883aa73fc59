"""Production's shape on loopback: nginx from deploy/nginx.conf in front of three gateway
processes sharing a real Redis (or a three-master Redis Cluster), and the fake upstream.

Clients get distinct addresses by binding to 127.0.0.2, 127.0.0.3, ...: every connection a gateway
sees comes from nginx (127.0.0.1), so only X-Forwarded-For can tell the clients apart.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fake_upstream import FakeUpstream
from tests.support.processes import (
    ROOT,
    Process,
    free_port,
    gateway,
    require,
    wait_until_refused,
    wait_until_serving_sync,
)
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.e2e

LIMIT = 25
BURST = 300
REPLICAS = 3


def nginx_config(listen: int, upstreams: list[int]) -> str:
    """deploy/nginx.conf with only its listen port and its upstream servers changed."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    servers = "\n        ".join(f"server 127.0.0.1:{port};" for port in upstreams)
    for old, new in (
        ("listen 5000;", f"listen 127.0.0.1:{listen};"),
        ("server gateway:5000;", servers),
    ):
        assert text.count(old) == 1, f"deploy/nginx.conf no longer has {old!r}"
        text = text.replace(old, new)
    return text


@dataclass
class Stack:
    folder: Path
    port: int = 0
    gateways: list[Process] = field(default_factory=list)
    gateway_ports: list[int] = field(default_factory=list)
    others: list[Process] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, settings: dict[str, str]) -> None:
        nginx = require("nginx")
        self.gateway_ports = [free_port() for _ in range(REPLICAS)]
        for index, port in enumerate(self.gateway_ports):
            log = self.folder / f"gateway-{index}.log"
            self.gateways.append(
                gateway(port, log, TRUSTED_PROXIES="127.0.0.1/32", LOG_FORMAT="json", **settings)
            )
        for port, process in zip(self.gateway_ports, self.gateways, strict=True):
            wait_until_serving_sync(f"http://127.0.0.1:{port}/readyz", process)
        self.port = free_port()
        conf = self.folder / "nginx.conf"
        conf.write_text(nginx_config(self.port, self.gateway_ports))
        daemon = f"daemon off; pid {self.folder}/nginx.pid;"
        args = [nginx, "-e", "stderr", "-p", str(self.folder), "-c", str(conf), "-g", daemon]
        self.others.append(Process(args, log=self.folder / "nginx.log"))
        wait_until_serving_sync(f"{self.url}/healthz", self.others[-1])

    def stop(self) -> None:
        for process in [*self.others, *self.gateways]:
            process.close()

    def access_lines(self) -> list[dict]:
        lines = []
        for process in self.gateways:
            for record in process.json_lines():
                if record.get("logger") == "gateway.access":
                    lines.append(record)
        return lines


def fake_upstream(folder: Path) -> tuple[Process, str]:
    port = free_port()
    args = [sys.executable, "-m", "tests.support.fake_upstream", "--port", str(port)]
    process = Process(args, log=folder / "upstream.log", cwd=ROOT)
    wait_until_serving_sync(f"http://127.0.0.1:{port}/v1/models", process)
    return process, f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    """Redis, the fake upstream, three gateways with MINUTE_LIMIT, nginx: started once."""
    folder = tmp_path_factory.mktemp("stack")
    require("redis-server")
    redis_server = RedisServer()
    redis_server.start()
    upstream, base_url = fake_upstream(folder)
    stack = Stack(folder)
    try:
        stack.start(
            {
                "REDIS_URL": redis_server.url,
                "KEY_PREFIX": f"e2e-{uuid.uuid4().hex[:8]}",
                "MINUTE_LIMIT": str(LIMIT),
                "OPENAI_BASE_URL": base_url,
                "API_KEY": "sk-e2e",
                "ROUTE": "api",
            }
        )
        yield stack
    finally:
        stack.stop()
        upstream.close()
        redis_server.stop()


def client(address: str) -> aiohttp.ClientSession:
    """A client whose connections to nginx come from `address` (any 127.x.y.z is loopback)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0), limit=0, force_close=True)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60))


async def burst(stack: Stack, address: str, count: int, headers=None) -> Counter[int]:
    async with client(address) as session:

        async def one() -> int:
            body = {"user_content": "Hi"}
            async with session.post(f"{stack.url}/api", json=body, headers=headers) as response:
                await response.read()
                return response.status

        return Counter(await asyncio.gather(*(one() for _ in range(count))))


async def samples(port: int, name: str) -> list:
    """One replica's samples of a metric, read from its /metrics directly."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    families = text_string_to_metric_families(text)
    return [sample for f in families for sample in f.samples if sample.name == name]


async def requests_served(port: int) -> float:
    found = await samples(port, "gateway_requests_total")
    return sum(s.value for s in found if s.labels["route"] == "/api")


async def streams(port: int) -> float:
    (sample,) = await samples(port, "gateway_streams_in_flight")
    return sample.value


async def test_limits_hold_exactly_across_replicas(stack: Stack):
    counts = await asyncio.gather(
        burst(stack, "127.0.0.2", BURST // 2), burst(stack, "127.0.0.3", BURST // 2)
    )
    for count in counts:
        assert count == {200: LIMIT, 429: BURST // 2 - LIMIT}, count
    served = [await requests_served(port) for port in stack.gateway_ports]
    assert all(served) and sum(served) == BURST, served


async def test_gateways_see_the_client_address_nginx_saw(stack: Stack):
    async with client("127.0.0.4") as session:
        headers = {"X-Request-ID": "real-address-1"}
        async with session.post(f"{stack.url}/api", json={"user_content": "Hi"}, headers=headers):
            pass
    (line,) = [x for x in stack.access_lines() if x["request_id"] == "real-address-1"]
    assert (line["client_ip"], line["status"], line["limit"]) == ("127.0.0.4", 200, "allowed")


async def logged(process: Process, text: str) -> None:
    """Wait for text in a process's log: nginx writes its line just after the response."""
    for _ in range(500):
        if text in process.output():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{text!r} never logged:\n{process.output()}")


async def test_nginx_and_the_gateway_share_one_request_id(stack: Stack):
    async with client("127.0.0.8") as session, session.get(f"{stack.url}/healthz") as response:
        made = response.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    # The id the gateway returned is the one nginx made and logged; a client's own passes through.
    await logged(stack.others[0], f"rid={made} ")
    async with client("127.0.0.8") as session:
        headers = {"X-Request-ID": "client-chosen-1"}
        async with session.get(f"{stack.url}/healthz", headers=headers) as response:
            assert response.headers["X-Request-ID"] == "client-chosen-1"
    await logged(stack.others[0], "rid=client-chosen-1 ")


async def test_nginx_keeps_metrics_off_the_public_port(stack: Stack):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{stack.url}/metrics") as response:
            assert response.status == 404
        async with session.get(f"{stack.url}/healthz") as response:
            assert response.status == 200


async def test_a_forged_forwarded_for_stays_in_its_bucket(stack: Stack):
    assert await burst(stack, "127.0.0.5", LIMIT) == {200: LIMIT}
    async with client("127.0.0.5") as session:
        for index in range(20):
            forged = {"X-Forwarded-For": f"203.0.113.{index}", "X-Request-ID": f"forged-{index}"}
            body = {"user_content": "Hi"}
            async with session.post(f"{stack.url}/api", json=body, headers=forged) as response:
                assert response.status == 429
    seen = {x["client_ip"] for x in stack.access_lines() if x["request_id"].startswith("forged-")}
    assert seen == {"127.0.0.5"}


async def test_killing_one_replica_leaves_the_others_serving(stack: Stack):
    victim = stack.gateways[0]
    victim.signal(signal.SIGKILL)
    await victim.wait(10)
    assert await burst(stack, "127.0.0.6", LIMIT) == {200: LIMIT}
    assert await burst(stack, "127.0.0.6", 5) == {429: 5}


async def test_a_stream_survives_sigterm_to_its_replica(tmp_path, fake: FakeUpstream, fake_server):
    require("redis-server")
    redis_server = RedisServer()
    redis_server.start()
    stack = Stack(tmp_path)
    fake.hold_after_first = asyncio.Event()
    try:
        stack.start(
            {
                "REDIS_URL": redis_server.url,
                "OPENAI_BASE_URL": str(fake_server.make_url("/v1")),
                "API_KEY": "sk-e2e",
                "ROUTE": "api",
                "SHUTDOWN_GRACE": "30",
            }
        )
        async with aiohttp.ClientSession() as session:
            body = {"user_content": "Hi", "stream": True}
            async with session.post(f"{stack.url}/api", json=body) as response:
                first = await response.content.readuntil(b"\n\n")
                streaming = [await streams(port) for port in stack.gateway_ports]
                assert sorted(streaming) == [0, 0, 1]
                index = streaming.index(1)
                stack.gateways[index].signal(signal.SIGTERM)
                await wait_until_refused("127.0.0.1", stack.gateway_ports[index])
                # Meanwhile nginx sends everything else to the other replicas.
                for _ in range(10):
                    async with session.get(f"{stack.url}/readyz") as other:
                        assert other.status == 200
                assert stack.gateways[index].alive()
                fake.hold_after_first.set()
                rest = await response.read()
        assert b'"delta": "Hello"' in first
        assert rest.count(b"event: delta") == 3 and b"event: done" in rest
        assert b'"current_response": "Hello, world!"' in rest
        assert await stack.gateways[index].wait(30) == 0
    finally:
        fake.hold_after_first.set()
        stack.stop()
        redis_server.stop()


async def test_limits_hold_exactly_on_a_redis_cluster(tmp_path):
    cluster = RedisCluster(tmp_path)
    upstream, base_url = fake_upstream(tmp_path)
    stack = Stack(tmp_path)
    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    try:
        cluster.start()
        stack.start(
            {
                "REDIS_URL": cluster.url,
                "REDIS_FAILURE_MODE": "closed",
                "KEY_PREFIX": prefix,
                "MINUTE_LIMIT": str(LIMIT),
                "OPENAI_BASE_URL": base_url,
                "API_KEY": "sk-e2e",
                "ROUTE": "api",
            }
        )
        addresses = [f"127.0.0.{n}" for n in range(2, 8)]
        per_client = BURST // len(addresses)
        counts = await asyncio.gather(*(burst(stack, a, per_client) for a in addresses))
        for count in counts:
            assert count == {200: LIMIT, 429: per_client - LIMIT}, count
        spread = cluster.keys_per_node(prefix)
        assert sum(spread) == len(addresses) and sum(1 for n in spread if n) >= 2, spread
    finally:
        stack.stop()
        upstream.close()
        cluster.stop()
