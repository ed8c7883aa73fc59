"""Log set-up: plain text for people, one JSON object a line when LOG_FORMAT=json."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from gateway.config import Settings

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, *, pid: bool = False) -> None:
        super().__init__()
        self.pid = pid  # with WORKERS above 1, each line says which worker wrote it

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.pid:
            line["pid"] = record.process
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
    # The SDK's HTTP client logs every request at INFO; our access log already says it.
    for noisy in ("httpx", "httpx2", "openai"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return logging.getLogger("gateway")
