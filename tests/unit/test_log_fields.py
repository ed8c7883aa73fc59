"""The access line's short way to the log: the same line the logging module would write, and the
module's own way whenever anything but the gateway's one handler would see the record."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest

from gateway.observe.logs import JsonFormatter, TextFormatter, log_fields

HOSTILE = "x\nINFO gateway.access: GET / 200\r\x1b[31m\u2028"
FIELDS: dict[str, object] = {
    "request_id": "abc",
    "client_ip": "203.0.113.7",
    "status": 200,
    "duration_ms": 1.5,
    "limit": None,
    "note": HOSTILE,
    "plain": "a b=c",
}
FORMATTERS = {
    "text": lambda: TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"),
    "text with pid": lambda: TextFormatter(
        "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
    ),
    "json": JsonFormatter,
    "json with pid": lambda: JsonFormatter(pid=True),
}


@pytest.fixture
def logger():
    """A logger under a root with one handler of the gateway's, restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    made = logging.getLogger("gateway.test_log_fields")
    yield made
    root.handlers[:] = handlers
    root.setLevel(level)
    made.filters.clear()


def _install(formatter: logging.Formatter) -> io.StringIO:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    return stream


@pytest.mark.parametrize("name", FORMATTERS)
@pytest.mark.parametrize("created", [1700000000.0, 1700000000.999, 1700000123.0456])
def test_the_short_way_writes_what_the_record_would(name, created):
    formatter = FORMATTERS[name]()
    record = logging.LogRecord(
        "gateway.access", logging.INFO, "", 0, "%s %s %s", ("POST", "/v1", 200), None
    )
    record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
    record.process = os.getpid()  # as when setup_logging has WORKERS above 1 record it
    record.__dict__.update(FIELDS)
    line = formatter.line(created, logging.INFO, "gateway.access", "POST /v1 200", FIELDS)
    assert line == formatter.format(record)
    if name.startswith("json"):
        assert json.loads(line)["note"] == HOSTILE
    else:
        assert "\n" not in line and "\x1b" not in line and "\u2028" not in line


@pytest.mark.parametrize("name", FORMATTERS)
def test_one_line_per_call_through_the_gateways_handler(logger, name):
    stream = _install(FORMATTERS[name]())
    log_fields(logger, logging.INFO, "%s %s %s", ("GET", "/x", 404), {"status": 404})
    log_fields(logger, logging.WARNING, "%s %s %s", ("GET", "/y", 500), {"status": 500})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert "GET /x 404" in lines[0] and "WARNING" in lines[1].upper()


def test_anything_else_listening_gets_the_record(logger, caplog):
    """pytest's own capturing handler (or an operator's filter) sees a real LogRecord."""
    stream = _install(TextFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(caplog.handler)
    log_fields(logger, logging.INFO, "%s %s %s", ("GET", "/x", 200), {"route": "/x"})
    assert [(r.getMessage(), r.route) for r in caplog.records] == [("GET /x 200", "/x")]
    assert stream.getvalue().count("\n") == 1


def test_a_filter_on_the_way_is_run(logger):
    stream = _install(TextFormatter("%(levelname)s %(name)s: %(message)s"))
    logger.addFilter(lambda record: record.getMessage() != "GET /secret 200")
    log_fields(logger, logging.INFO, "%s %s %s", ("GET", "/secret", 200), {})
    log_fields(logger, logging.INFO, "%s %s %s", ("GET", "/open", 200), {})
    assert stream.getvalue().splitlines() == ["INFO gateway.test_log_fields: GET /open 200"]


def test_a_handler_above_the_level_writes_nothing(logger):
    stream = _install(TextFormatter("%(message)s"))
    logging.getLogger().handlers[0].setLevel(logging.WARNING)
    log_fields(logger, logging.INFO, "%s", ("quiet",), {})
    assert stream.getvalue() == ""


class _Broken(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError("the log reader went away")


def test_a_log_that_cannot_be_written_does_not_fail_the_caller(logger, capsys):
    stream = _install(TextFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().handlers[0].setStream(_Broken())
    log_fields(logger, logging.INFO, "%s", ("lost",), {})  # reported as logging does, not raised
    assert stream.getvalue() == ""
    assert "BrokenPipeError" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("fmt", "style", "written"),
    [
        ("%(levelno)d %(message)s", "%", "20 x k=1"),
        ("{levelname} {message}", "{", "INFO x k=1"),
    ],
)
def test_a_format_the_short_way_cannot_fill_takes_the_modules_way(logger, fmt, style, written):
    formatter = TextFormatter(fmt, style=style)
    stream = _install(formatter)
    log_fields(logger, logging.INFO, "%s", ("x",), {"k": 1})
    assert not formatter.writes_lines
    assert stream.getvalue() == written + "\n"


def test_a_record_factory_of_its_own_gets_its_records(logger):
    stream = _install(TextFormatter("%(message)s %(tag)s"))
    made = logging.getLogRecordFactory()

    def tagged(*args, **kwargs):
        record = made(*args, **kwargs)
        record.tag = "traced"
        return record

    logging.setLogRecordFactory(tagged)
    try:
        log_fields(logger, logging.INFO, "%s", ("x",), {})
    finally:
        logging.setLogRecordFactory(made)
    assert stream.getvalue().startswith("x traced")
