"""The start-up warning of an open relay: API_KEY set, no gateway key, reachable from outside."""

from __future__ import annotations

import pytest

from gateway.config import load_settings
from gateway.observe.startup import risks


@pytest.mark.parametrize(
    ("env", "warned"),
    [
        ({"API_KEY": "sk-x"}, True),
        ({"API_KEY": "sk-x", "GATEWAY_KEYS": "a:0123456789abcdef"}, False),
        ({"API_KEY": "sk-x", "HOST": "127.0.0.1"}, False),
        ({}, False),
    ],
)
def test_open_relay_warning(env, warned):
    found = risks(load_settings(env))
    assert any(line.startswith("open relay: ") for line in found) == warned
    assert not any("sk-x" in line for line in found)
