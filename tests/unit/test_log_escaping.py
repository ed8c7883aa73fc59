"""Logs that cannot be forged: every text line is one record, whatever a client sent."""

from __future__ import annotations

import logging
import sys

import pytest

from gateway.observe.logs import TRACEBACK_PREFIX, TextFormatter, escape

FORMAT = "%(levelname)s %(name)s: %(message)s"
HOSTILE = "x\nINFO gateway.access: GET / 200\r\x1b[31mred\x00\x7f\x85\u2028\u2029end"


def record(msg: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    made = logging.LogRecord("gateway.test", logging.WARNING, __file__, 1, msg, args, exc_info)
    made.__dict__.update(extra)
    return made


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("a\nb", "a\\x0ab"),
        ("\r\t\x00\x1b", "\\x0d\\x09\\x00\\x1b"),
        ("\x7f\x85", "\\x7f\\x85"),
        ("\u2028\u2029", "\\u2028\\u2029"),
        ("ordinary, ünïcødé 中文", "ordinary, ünïcødé 中文"),
    ],
)
def test_escape(text, escaped):
    assert escape(text) == escaped


def test_message_arguments_and_extras_stay_on_one_line():
    line = TextFormatter(FORMAT).format(
        record("got %s", HOSTILE, path=HOSTILE, route="/api", plain="a b=c")
    )
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert "\u2028" not in line and "\x85" not in line
    assert line.startswith("WARNING gateway.test: got x\\x0aINFO")
    assert " route=/api " in line
    assert ' plain="a b=c"' in line


def test_every_traceback_line_is_marked():
    try:
        raise ValueError(HOSTILE)
    except ValueError:
        info = sys.exc_info()
    line = TextFormatter(FORMAT).format(record("failed", exc_info=info))
    first, *rest = line.split("\n")
    assert first == "WARNING gateway.test: failed"
    assert rest and all(each.startswith(TRACEBACK_PREFIX) for each in rest)
    assert not any(c in line for c in "\r\x1b\x00\u2028")
