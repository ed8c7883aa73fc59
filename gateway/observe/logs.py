"""Log set-up: plain text for people, one JSON object a line when LOG_FORMAT=json."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from gateway.config import Settings

LIBRARY_LOGGERS = ("aiohttp", "asyncio", "httpx", "httpx2", "httpcore", "openai", "redis", "uvloop")
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if extra:
            text += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        return text


def setup_logging(settings: Settings) -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # Third-party loggers (the SDK's HTTP client logs every request; aiohttp and asyncio chat at
    # DEBUG) keep to LOG_LEVEL_LIBRARIES, and never go below LOG_LEVEL.
    libraries = max(logging.getLevelName(settings.log_level_libraries), root.level)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(libraries)
    return logging.getLogger("gateway")
