""".env.example and docker-compose.yml, checked against the code they configure."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping

import pytest
import yaml

from gateway.config import load_settings
from gateway.probe import liveness_url
from tests.support.processes import ROOT

COMPOSE_ONLY = {"GATEWAY_REPLICAS", "PUBLISH_PORT", "GATEWAY_SUBNET", "STOP_GRACE_PERIOD"}
LINE = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


class Recording(Mapping[str, str]):
    """An empty environment that notes every name load_settings asks it for."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        raise KeyError(name)

    def get(self, name, default=None):  # type: ignore[override]
        self.asked.add(name)
        return default

    def __contains__(self, name: object) -> bool:
        self.asked.add(str(name))
        return False

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def example() -> dict[str, tuple[bool, str]]:
    """NAME -> (commented out, value) for every NAME= line of .env.example."""
    found = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = LINE.match(line)
        if match:
            assert match.group(2) not in found, f"{match.group(2)} twice"
            found[match.group(2)] = (bool(match.group(1)), match.group(3))
    return found


def test_env_example_lists_every_setting_and_nothing_else():
    env = Recording()
    load_settings(env)
    assert env.asked, "load_settings read nothing"
    assert set(example()) == env.asked | COMPOSE_ONLY


def test_env_example_comments_show_the_real_defaults():
    defaults = load_settings({})
    for name, (commented, value) in example().items():
        if commented and name not in COMPOSE_ONLY:
            assert load_settings({name: value}) == defaults, f"# {name}={value} is not the default"


def test_env_example_as_written_is_valid():
    values = {name: value for name, (commented, value) in example().items() if not commented}
    load_settings(values)


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def default(value: str) -> str:
    """The default of a ${NAME:-default} reference."""
    match = re.fullmatch(r"\$\{(\w+):-([^}]*)\}", str(value))
    assert match, value
    return match.group(2)


def test_compose_runs_replicas_behind_nginx_once_redis_is_healthy():
    services = compose()["services"]
    assert set(services) == {"redis", "gateway", "nginx"}
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    gateway = services["gateway"]
    assert default(gateway["deploy"]["replicas"]) == "3"
    assert gateway["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert services["nginx"]["depends_on"] == {"gateway": {"condition": "service_healthy"}}
    assert "ports" not in gateway, "replicas are reached through nginx only"
    (published,) = services["nginx"]["ports"]
    assert re.fullmatch(r"\$\{PUBLISH_PORT:-5000\}:5000", published)
    (mount,) = services["nginx"]["volumes"]
    source, target, _ = mount.split(":")
    assert (ROOT / source).is_file() and target == "/etc/nginx/nginx.conf"
    for service in services.values():
        image = service["image"]
        assert re.search(r":\d+\.\d+\.\d+", image) or service.get("build"), image


def test_compose_trusts_exactly_its_own_network():
    spec = compose()
    (network,) = spec["networks"].values()
    (pool,) = network["ipam"]["config"]
    gateway = spec["services"]["gateway"]
    assert default(gateway["environment"]["TRUSTED_PROXIES"]) == default(pool["subnet"])


def test_compose_passes_only_env_file_settings_and_outlasts_the_grace():
    gateway = compose()["services"]["gateway"]
    assert gateway["env_file"] == [{"path": ".env", "required": False}]
    # A host's LANG must not leak in through interpolation.
    assert "LANG" not in gateway["environment"]
    assert gateway["environment"]["PORT"] == "5000"
    stop = default(gateway["stop_grace_period"])
    assert stop.endswith("s") and float(stop[:-1]) > load_settings({}).shutdown_grace


def compose_client() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], capture_output=True, text=True)
        # Compose v1 (docker-compose 1.x) does not read the compose specification used here.
        if probe.returncode == 0 and not re.search(r"version 1\.", probe.stdout):
            return command
    return None


def test_docker_compose_config_accepts_the_file(tmp_path):
    command = compose_client()
    if command is None:
        pytest.skip("no Docker Compose v2 client (docker compose / docker-compose) on this machine")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    done = subprocess.run(
        [
            *command,
            "--project-directory",
            str(tmp_path),
            "-f",
            str(ROOT / "docker-compose.yml"),
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout)
    gateway = resolved["services"]["gateway"]
    assert gateway["deploy"]["replicas"] == 3
    assert gateway["environment"]["TRUSTED_PROXIES"] == "172.29.0.0/24"
    assert gateway["environment"]["LOG_FORMAT"] == "json"


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:5000/healthz"),
        ("::", "http://[::1]:5000/healthz"),
        ("127.0.0.2", "http://127.0.0.2:5000/healthz"),
        ("::1", "http://[::1]:5000/healthz"),
    ],
)
def test_the_healthcheck_probes_the_address_the_gateway_listens_on(host, url):
    assert liveness_url({"HOST": host}) == url
