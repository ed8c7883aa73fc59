"""Log set-up: plain text for people, one JSON object a line when LOG_FORMAT=json."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any, cast

from gateway.config import Settings

LIBRARY_LOGGERS = ("aiohttp", "asyncio", "httpx", "httpx2", "httpcore", "openai", "redis", "uvloop")
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, *, pid: bool = False) -> None:
        super().__init__()
        self.pid = pid  # with WORKERS above 1, each line says which worker wrote it

    def format(self, record: logging.LogRecord) -> str:
        line = self._fields(record.created, record.levelname, record.name, record.getMessage())
        if self.pid:
            line["pid"] = record.process
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)

    writes_lines = True

    def line(
        self, created: float, level: int, name: str, message: str, extra: dict[str, object]
    ) -> str:
        """What format() makes of a record with these fields and no traceback."""
        line = self._fields(created, logging.getLevelName(level), name, message)
        if self.pid:
            line["pid"] = os.getpid()
        line.update(extra)
        return json.dumps(line, ensure_ascii=False, default=str)

    @staticmethod
    def _fields(created: float, level: str, name: str, message: str) -> dict[str, object]:
        return {
            "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
            "level": level.lower(),
            "logger": name,
            "message": message,
        }


# Whatever could end a line or steer a terminal: C0 and C1 controls, DEL, Unicode line breaks.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_PLAIN = re.compile(r"[^\s\"=]*")
TRACEBACK_PREFIX = "  | "
_NUMBERS = frozenset({int, float, bool})
# The fields TextFormatter.line fills in, and how a %-style format names one.
_LINE_FIELDS = frozenset({"asctime", "levelname", "name", "process", "message"})
_FIELD = re.compile(r"%\((\w+)\)")


def escape(text: str) -> str:
    """The text on one line: each control character written as a \\xNN or \\uNNNN escape."""
    if text.isprintable():
        # No control character, no line or paragraph separator: nearly every line, left as it is.
        return text
    return _UNSAFE.sub(
        lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 256 else f"\\u{ord(m[0]):04x}", text
    )


def _value(value: object) -> str:
    if value is None or type(value) in _NUMBERS:
        # Nothing to quote or escape: most of an access line's values.
        return str(value)
    text = str(value)
    if text.isprintable() and " " not in text and '"' not in text and "=" not in text:
        return text  # what _PLAIN allows, with nothing to escape
    return escape(text if _PLAIN.fullmatch(text) else json.dumps(text, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """One line a record, whatever a client managed to put in it: every value is escaped, and
    a traceback's lines all start with TRACEBACK_PREFIX, so none can pass for a record."""

    _second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return self._time(record.created, int(record.msecs))

    def _time(self, created: float, msecs: int) -> str:
        # The base class's format, its date and time worked out once a second, not per record.
        second = int(created)
        if self._second[0] != second:
            self._second = (second, time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second)))
        return f"{self._second[1]},{msecs:03d}"

    def formatMessage(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        return _with_extra(escape(super().formatMessage(record)), extra)

    @functools.cached_property
    def writes_lines(self) -> bool:
        """Whether line() can stand in for format(): a %-style format of the fields it knows."""
        fields = set(_FIELD.findall(self._fmt or ""))
        return type(self._style) is logging.PercentStyle and fields <= _LINE_FIELDS

    def line(
        self, created: float, level: int, name: str, message: str, extra: dict[str, object]
    ) -> str:
        """What format() makes of a record with these fields and no traceback."""
        head = self._fmt % {  # type: ignore[operator]
            "asctime": self._time(created, int((created - int(created)) * 1000)),
            "levelname": logging.getLevelName(level),
            "name": name,
            "process": os.getpid(),
            "message": message,
        }
        return _with_extra(escape(head), extra)

    def format(self, record: logging.LogRecord) -> str:
        # Not the base class's: it would reuse a traceback another formatter cached unprefixed.
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        lines = [self.formatMessage(record)]
        if record.exc_info:
            lines.append(_indented(self.formatException(record.exc_info)))
        elif record.exc_text:
            lines.append(_indented(record.exc_text))
        if record.stack_info:
            lines.append(_indented(self.formatStack(record.stack_info)))
        return "\n".join(lines)


def _with_extra(text: str, extra: dict[str, object]) -> str:
    if not extra:
        return text
    return text + " " + " ".join(f"{k}={_value(v)}" for k, v in extra.items())


def log_fields(
    logger: logging.Logger, level: int, msg: str, args: tuple[object, ...], extra: dict[str, object]
) -> None:
    """logger.log(level, msg, *args, extra=extra), for a line logged on every request.

    When the one handler setup_logging installed would be all that sees the record (no other
    handler, no filter on the way), the line is written as that handler would write it, without
    the logging module's record; else (a test's capturing handler, say) the module's own way.
    """
    handler = _sole_handler(logger, level)
    if handler is None or logging.getLogRecordFactory() is not logging.LogRecord:
        logger.log(level, msg, *args, extra=extra)
        return
    formatter = cast(TextFormatter | JsonFormatter, handler.formatter)
    line = formatter.line(time.time(), level, logger.name, msg % args, extra)
    try:
        with handler.lock:  # type: ignore[union-attr]
            handler.stream.write(line + handler.terminator)
            handler.stream.flush()
    except Exception:
        # A log that cannot be written (a closed pipe, say) never fails the request: the
        # logging module's own way reports it as the handler would, and goes on.
        logger.log(level, msg, *args, extra=extra)


def _sole_handler(logger: logging.Logger, level: int) -> logging.StreamHandler[Any] | None:
    found: logging.StreamHandler[Any] | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters or current.disabled:
            return None
        for handler in current.handlers:
            if (
                found is not None
                or type(handler) is not logging.StreamHandler
                or type(handler.formatter) not in _FORMATTERS
                or not cast(TextFormatter | JsonFormatter, handler.formatter).writes_lines
                or handler.filters
                or level < handler.level
            ):
                return None
            found = handler
        current = current.parent if current.propagate else None
    return found


def _indented(text: str) -> str:
    return "\n".join(TRACEBACK_PREFIX + escape(line) for line in text.splitlines())


_FORMATTERS = (TextFormatter, JsonFormatter)


def setup_logging(settings: Settings) -> logging.Logger:
    # What our formats never print, each record would otherwise look up: the caller's frame,
    # the thread, the process name, and (but for WORKERS above 1) the pid.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.logProcesses = settings.workers > 1
    handler = logging.StreamHandler(sys.stderr)
    workers = settings.workers > 1
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(pid=workers))
    else:
        pid = "[%(process)d]" if workers else ""
        handler.setFormatter(TextFormatter(f"%(asctime)s %(levelname)s %(name)s{pid}: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # Third-party loggers (the SDK's HTTP client logs every request; aiohttp and asyncio chat at
    # DEBUG) keep to LOG_LEVEL_LIBRARIES, and never go below LOG_LEVEL.
    libraries = max(logging.getLevelName(settings.log_level_libraries), root.level)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(libraries)
    return logging.getLogger("gateway")
