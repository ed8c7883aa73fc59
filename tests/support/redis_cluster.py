"""A three-master Redis Cluster on loopback, made of redis-server processes started for a test."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path

import redis

from tests.support.processes import Process, require

READY_WAIT = 30.0


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(20000, 45000)
        if port not in ports and _bindable(port) and _bindable(port + 10000):
            ports.append(port)
    return ports


class RedisCluster:
    def __init__(self, folder: Path, masters: int = 3) -> None:
        self.folder = folder
        self.ports = cluster_ports(masters)
        self.nodes: list[Process] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        server, cli = require("redis-server"), require("redis-cli")
        for port in self.ports:
            node = self.folder / f"node-{port}"
            node.mkdir()
            args = [
                server,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node / "nodes.conf"),
                "--dir", str(node),
                "--save", "",
                "--appendonly", "no",
            ]  # fmt: skip
            self.nodes.append(Process(args, log=node / "redis.log"))
        for port in self.ports:
            self._wait(port, lambda client: bool(client.ping()))
        create = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
        subprocess.run(
            [*create, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=READY_WAIT,
        )
        for port in self.ports:
            self._wait(port, lambda client: client.cluster("info")["cluster_state"] == "ok")

    def _wait(self, port: int, check) -> None:
        deadline = time.monotonic() + READY_WAIT
        with redis.Redis(port=port, socket_timeout=2, decode_responses=True) as client:
            while True:
                try:
                    if check(client):
                        return
                except (redis.RedisError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"cluster node {port} not ready in {READY_WAIT}s")
                time.sleep(0.05)

    def keys_per_node(self, prefix: str) -> list[int]:
        counts = []
        for port in self.ports:
            with redis.Redis(port=port, socket_timeout=2) as client:
                counts.append(sum(1 for _ in client.scan_iter(match=f"{prefix}:*")))
        return counts

    def stop(self) -> None:
        for node in self.nodes:
            node.close()
