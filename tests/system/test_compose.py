"""docker-compose.yml reads only what .env.example documents, from where it says."""

from __future__ import annotations

import re

import yaml

from gateway.config import load_settings
from tests.support.processes import ROOT
from tests.support.settings import settings_read

COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_SECTION = "# --- Docker Compose only"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error} and bare $NAME; $$ escapes a dollar.
INTERPOLATION = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_]\w*)|([A-Za-z_]\w*))")


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def interpolated() -> set[str]:
    text = "\n".join(
        line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    return {a or b for a, b in INTERPOLATION.findall(text)}


def compose_knobs() -> set[str]:
    """Names .env.example lists under its Docker Compose section."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.startswith(COMPOSE_SECTION)]
    found = set()
    for line in lines[start + 1 :]:
        if line.startswith("# ---"):
            break
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
        if match:
            found.add(match.group(1))
    return found


def test_every_service_is_healthy_or_waits_for_a_healthy_one():
    spec = compose()
    services = spec["services"]
    assert {"redis", "gateway", "nginx"} <= set(services)
    for name, service in services.items():
        waits = {
            dep
            for dep, how in (service.get("depends_on") or {}).items()
            if how.get("condition") == "service_healthy"
        }
        assert "healthcheck" in service or waits, f"{name}: no healthcheck, waits for nothing"
        assert waits <= set(services), name
        assert set(service["networks"]) <= set(spec["networks"]), name


def test_only_documented_compose_knobs_are_interpolated():
    used, knobs, settings = interpolated(), compose_knobs(), settings_read()
    assert used, "the file interpolates nothing: the test reads it wrong"
    assert used <= knobs, f"interpolated but not in .env.example's compose section: {used - knobs}"
    assert not knobs & settings, f"gateway settings posing as compose knobs: {knobs & settings}"
    assert knobs <= used, f"documented but unused: {knobs - used}"


def test_no_gateway_setting_comes_from_the_shell():
    settings = settings_read()
    gateway = compose()["services"]["gateway"]
    assert gateway["env_file"] == [{"path": ".env", "required": False}]
    for name, value in gateway["environment"].items():
        assert name in settings, f"{name} is no setting of the gateway"
        for a, b in INTERPOLATION.findall(str(value)):
            assert (a or b) not in settings, f"{name} is read from the shell's {a or b}"
    assert not interpolated() & settings


def test_the_gateway_outlasts_the_shutdown_grace():
    gateway = compose()["services"]["gateway"]
    match = re.fullmatch(r"\$\{STOP_GRACE_PERIOD:-(\d+(?:\.\d+)?)s\}", gateway["stop_grace_period"])
    assert match, gateway["stop_grace_period"]
    assert float(match.group(1)) > load_settings({}).shutdown_grace


def test_replicas_tells_each_gateway_how_many_share_the_limits():
    gateway = compose()["services"]["gateway"]
    assert gateway["environment"]["REPLICAS"] == gateway["deploy"]["replicas"]
