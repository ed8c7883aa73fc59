"""Settings: defaults, the original's names, and one exact message per bad value."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

import gateway
from gateway.config import OPENAI_FAMILIES, ConfigError, Secret, load_settings
from gateway.quota import Limit

LIMIT = "expected a whole number from 0 to 1000000000000000"


def test_defaults():
    s = load_settings({})
    assert s.api_key is None
    assert s.limits == ()
    assert (s.route, s.language, s.host, s.port) == ("/", "en", "0.0.0.0", 5000)
    assert s.openai_base_url == "https://api.openai.com/v1"
    assert (s.default_model, s.default_max_tokens, s.max_tokens_cap) == ("gpt-4o-mini", 100, 3500)
    assert (s.upstream_timeout, s.max_body_bytes) == (60.0, 1024 * 1024)


def test_original_names():
    s = load_settings(
        {
            "API_KEY": "sk-1",
            "SECOND_LIMIT": "1",
            "MINUTE_LIMIT": "3",
            "HOUR_LIMIT": "50",
            "ROUTE": "api",
        }
    )
    assert s.api_key == Secret("sk-1")
    assert s.limits == (
        Limit("second", 1, 1),
        Limit("minute", 60, 3),
        Limit("hour", 3600, 50),
    )
    assert s.route == "/api"


@pytest.mark.parametrize(
    ("raw", "route"),
    [
        ("api", "/api"),
        ("/api", "/api"),
        ("api/", "/api"),
        ("/v2/chat/", "/v2/chat"),
        ("/", "/"),
        ("", "/"),
    ],
)
def test_route_slashes_tolerated(raw, route):
    assert load_settings({"ROUTE": raw}).route == route


@pytest.mark.parametrize("value", ["", "0", "  "])
def test_zero_or_empty_limit_means_none(value):
    assert load_settings({"MINUTE_LIMIT": value}).limits == ()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SECOND_LIMIT": "-1"}, "SECOND_LIMIT='-1' is not valid (" + LIMIT + ")"),
        ({"MINUTE_LIMIT": "3.5"}, "MINUTE_LIMIT='3.5' is not valid (" + LIMIT + ")"),
        ({"HOUR_LIMIT": "many"}, "HOUR_LIMIT='many' is not valid (" + LIMIT + ")"),
        # Beyond 10**15, rate_limit.lua's doubles and Redis's integer replies would miscount.
        (
            {"DAY_LIMIT": "1000000000000001"},
            "DAY_LIMIT='1000000000000001' is not valid (" + LIMIT + ")",
        ),
        (
            {"TOKENS_PER_DAY": "1" + "0" * 20},
            "TOKENS_PER_DAY='" + "1" + "0" * 20 + "' is not valid (" + LIMIT + ")",
        ),
        ({"PORT": "abc"}, "PORT='abc' is not valid (expected a whole number from 1 to 65535)"),
        ({"PORT": "70000"}, "PORT='70000' is not valid (expected a whole number from 1 to 65535)"),
        (
            {"UPSTREAM_TIMEOUT": "0"},
            "UPSTREAM_TIMEOUT='0' is not valid (expected a number of seconds > 0)",
        ),
        (
            {"UPSTREAM_TIMEOUT": "soon"},
            "UPSTREAM_TIMEOUT='soon' is not valid (expected a number of seconds > 0)",
        ),
        (
            {"HEADER_TIMEOUT": "-1"},
            "HEADER_TIMEOUT='-1' is not valid (expected a number of seconds > 0)",
        ),
        (
            {"SEND_TIMEOUT": "0"},
            "SEND_TIMEOUT='0' is not valid (expected a number of seconds > 0)",
        ),
        (
            {"MAX_CONNECTIONS_PER_IP": "-1"},
            "MAX_CONNECTIONS_PER_IP='-1' is not valid (expected a whole number >= 0)",
        ),
        ({"MAX_BODY_BYTES": "0"}, "MAX_BODY_BYTES='0' is not valid (expected a whole number >= 1)"),
        (
            {"MAX_UPSTREAM_BODY_BYTES": "32M"},
            "MAX_UPSTREAM_BODY_BYTES='32M' is not valid (expected a whole number >= 1)",
        ),
        (
            {"DEFAULT_MAX_TOKENS": "x"},
            "DEFAULT_MAX_TOKENS='x' is not valid (expected a whole number >= 1)",
        ),
        (
            {"OPENAI_BASE_URL": "localhost:8000"},
            "OPENAI_BASE_URL='localhost:8000' is not valid (expected an http:// or https:// URL)",
        ),
        ({"ROUTE": "a b"}, "ROUTE='a b' is not valid (expected a path such as api or v2/chat)"),
        (
            {"ROUTE": "healthz"},
            "ROUTE='healthz' is not valid (that path is one of the gateway's own: "
            "/v1/..., /healthz, /readyz, /metrics, /openapi.json)",
        ),
        (
            {"ROUTE": "/v1/chat/completions"},
            "ROUTE='/v1/chat/completions' is not valid (that path is one of the gateway's own: "
            "/v1/..., /healthz, /readyz, /metrics, /openapi.json)",
        ),
        (
            {"REDIS_FAILURE_MODE": "maybe"},
            "REDIS_FAILURE_MODE='maybe' is not valid (expected one of local, open, closed)",
        ),
        (
            {"TRUSTED_PROXIES": "10.0.0.0/8,nope"},
            "TRUSTED_PROXIES='10.0.0.0/8,nope' is not valid ('nope' is not an IP address or CIDR)",
        ),
        ({"DEFAULT_MAX_TOKENS": "4000"}, "DEFAULT_MAX_TOKENS=4000 is above MAX_TOKENS_CAP=3500"),
        (
            {"REDIS_URL": "redis://127.0.0.1:notaport"},
            "REDIS_URL='redis://127.0.0.1:notaport' is not valid "
            "(expected redis://host:port/db, the port from 1 to 65535)",
        ),
        (
            {"REDIS_URL": "redis://127.0.0.1:70000/0"},
            "REDIS_URL='redis://127.0.0.1:70000/0' is not valid "
            "(expected redis://host:port/db, the port from 1 to 65535)",
        ),
        (
            {"REDIS_URL": "redis://127.0.0.1:6379/zero"},
            "REDIS_URL='redis://127.0.0.1:6379/zero' is not valid "
            "(expected a database number after the port, such as /0)",
        ),
        (
            {"REDIS_URL": "http://127.0.0.1:6379"},
            "REDIS_URL='http://127.0.0.1:6379' is not valid "
            "(expected a redis://, rediss://, unix:// or redis+cluster:// URL)",
        ),
        (
            {"TOKENS_PER_MINUTE": "1000"},
            "TOKENS_PER_MINUTE=1000 is below DEFAULT_RESERVE_TOKENS=1024",
        ),
        (
            {"TOKENS_PER_DAY": "500", "DEFAULT_RESERVE_TOKENS": "512"},
            "TOKENS_PER_DAY=500 is below DEFAULT_RESERVE_TOKENS=512",
        ),
        (
            {"OPENAI_ROUTES": "chat,videos"},
            "OPENAI_ROUTES='chat,videos' is not valid (expected a comma-separated list of "
            "chat,completions,embeddings,models,responses,moderations,images,audio)",
        ),
        (
            {"LOG_LEVEL_LIBRARIES": "LOUD"},
            "LOG_LEVEL_LIBRARIES='LOUD' is not valid (expected DEBUG, INFO, WARNING or ERROR)",
        ),
        ({"WORKERS": "0"}, "WORKERS='0' is not valid (expected a whole number from 1 to 64)"),
        (
            {"WORKERS": "2"},
            "WORKERS=2 needs REDIS_URL: without it each worker would count its clients' "
            "requests alone",
        ),
    ],
)
def test_bad_value_names_variable_and_value(env, message):
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert str(caught.value) == message


def test_a_budget_at_the_default_reserve_and_the_routes_named():
    s = load_settings({"TOKENS_PER_MINUTE": "1024", "OPENAI_ROUTES": " Models, chat ,chat"})
    assert s.tokens_per_minute == 1024
    assert s.openai_routes == ("chat", "models")
    assert load_settings({}).openai_routes == OPENAI_FAMILIES


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1", "redis://:secret@redis:6380/2", "rediss://r:6379", "unix:///r.sock"],
)
def test_good_redis_urls(url):
    assert load_settings({"REDIS_URL": url}).redis_url == url


def test_secret_never_shows_itself():
    s = load_settings({"API_KEY": "sk-very-secret"})
    assert "sk-very-secret" not in repr(s)
    assert "sk-very-secret" not in str(s.api_key)
    assert s.api_key is not None and s.api_key.reveal() == "sk-very-secret"


def start(cwd, **env):
    """`python -m gateway` in cwd with only env; it exits at once on a bad setting."""
    return subprocess.run(
        [sys.executable, "-m", "gateway"],
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_bad_value_stops_start_up_with_one_line(tmp_path):
    result = start(tmp_path, PORT="abc")
    assert result.returncode == 2
    expected = "PORT='abc' is not valid (expected a whole number from 1 to 65535)"
    assert result.stderr.strip() == f"gateway: configuration error: {expected}"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("url", ["redis://127.0.0.1:notaport", "redis://127.0.0.1:70000"])
def test_an_unparsable_redis_url_stops_start_up_with_one_line(tmp_path, url):
    result = start(tmp_path, REDIS_URL=url)
    assert result.returncode == 2
    assert result.stderr.startswith(f"gateway: configuration error: REDIS_URL={url!r} is not")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_setting_is_reported_before_anything_heavy_is_imported(tmp_path):
    result = start(tmp_path, PORT="abc", PYTHONPROFILEIMPORTTIME="1")
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert result.returncode == 2
    assert "gateway.config" in imported
    assert not {"aiohttp", "openai", "redis", "gateway.app"} & imported


def test_dotenv_in_working_directory_is_read_and_environment_wins(tmp_path):
    (tmp_path / ".env").write_text("PORT=abc\nHOUR_LIMIT=oops\n")
    result = start(tmp_path, PORT="1234")
    assert result.returncode == 2
    assert result.stderr.strip().endswith("HOUR_LIMIT='oops' is not valid (" + LIMIT + ")")


def test_dotenv_beside_the_package_is_not_read(tmp_path):
    package_env = Path(gateway.__file__).parent / ".env"
    if package_env.exists():
        pytest.skip(f"{package_env} exists already; not touching it")
    package_env.write_text("HOUR_LIMIT=oops\n")
    try:
        result = start(tmp_path, PORT="abc")
    finally:
        package_env.unlink()
    assert "HOUR_LIMIT" not in result.stderr
    assert "PORT='abc'" in result.stderr


def test_a_port_already_taken_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = start(tmp_path, HOST="127.0.0.1", PORT=str(port))
    assert result.returncode == 1
    assert result.stderr.startswith(f"gateway: cannot listen on HOST='127.0.0.1' PORT={port}: ")
    assert "Traceback" not in result.stderr


def test_trusted_proxies_in_ipv4_mapped_form_are_ipv4():
    s = load_settings({"TRUSTED_PROXIES": "::ffff:10.0.0.1, ::ffff:10.1.0.0/112, 2001:db8::/32"})
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.1/32", "10.1.0.0/16", "2001:db8::/32"]
