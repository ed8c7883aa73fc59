"""The limiter's own RESP packer writes every command byte for byte as redis-py would."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import Connection

from gateway.limits.link import pack

COMMANDS = [
    ("PING",),
    ("SCRIPT", "LOAD", "return redis.call('TIME')\r\n-- two lines"),
    ("EVALSHA", "a" * 40, 3, "gw:{127.0.0.1}:req", "gw:{127.0.0.1}:tok", "", "ab12", 1, 0, -5),
    ("EVALSHA", "b" * 40, 1, "gw:{key:ünïcødé 中文}:req", "", "m1", 10**15, 2**63),
    ("EVALSHA", "c" * 40, 1, "gw:{2001:db8::/64}:req", "\x00\r\n$3", 0),
]


@pytest.mark.parametrize("command", COMMANDS)
def test_as_redis_py_writes_it(command):
    assert pack(command) == b"".join(Connection().pack_command(*command))


@pytest.mark.parametrize("odd", [1.5, True, b"bytes", None])
def test_anything_but_str_and_int_is_refused(odd):
    with pytest.raises(TypeError):
        pack(("EVALSHA", odd))
