"""The start-up warning of an open relay: API_KEY set and no gateway key."""

from __future__ import annotations

import logging

import pytest

import gateway.__main__ as entry


@pytest.mark.parametrize(
    ("env", "warned"),
    [
        ({"API_KEY": "sk-x"}, True),
        ({"API_KEY": "sk-x", "GATEWAY_KEYS": "a:0123456789abcdef"}, False),
        ({}, False),
    ],
)
def test_open_relay_warning(monkeypatch, tmp_path, capfd, env, warned):
    monkeypatch.chdir(tmp_path)
    for name in ("API_KEY", "GATEWAY_KEYS", "GATEWAY_KEYS_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(entry.web, "run_app", lambda app, **kwargs: None)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        entry.main()
    finally:
        root.handlers[:], root.level = handlers, level
    err = capfd.readouterr().err
    assert ("WARNING gateway: open relay" in err) == warned
    assert "sk-x" not in err
