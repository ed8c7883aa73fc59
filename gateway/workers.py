"""WORKERS=N: N processes serving one port; the parent passes SIGTERM on and exits after them."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

log = logging.getLogger(__name__)

_STOPPING = {signal.SIGTERM, signal.SIGINT}


def run_workers(count: int, serve: Callable[[], None]) -> int:
    """Fork `count` workers that each run `serve`; the exit code for the parent.

    SIGTERM or SIGINT to the parent reaches every worker, which drains its requests within
    SHUTDOWN_GRACE and exits; the parent exits after the last one. A worker that exits on its
    own (a crash, a port it cannot take) stops the others, so that whatever supervises the
    gateway restarts it whole rather than leaving it at part strength.
    """
    context = multiprocessing.get_context("fork")
    workers: list[BaseProcess] = []
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Blocked while forking, so that no worker runs the parent's handler; delivered after.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)
    try:
        for _ in range(count):
            process = context.Process(target=_work, args=(serve, blocked), daemon=False)
            process.start()
            workers.append(process)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    code = 0
    running = list(workers)
    while running:
        ready = wait([worker.sentinel for worker in running])
        for worker in [w for w in running if w.sentinel in ready]:
            worker.join()
            running.remove(worker)
            if worker.exitcode:
                code = code or (worker.exitcode if worker.exitcode > 0 else 1)
            if not stopping:
                log.error("worker %s exited (%s); stopping the others", worker.pid, worker.exitcode)
                stop(signal.SIGTERM, None)
    return code


def _work(serve: Callable[[], None], mask: set[signal.Signals]) -> None:
    for signum in _STOPPING:
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    serve()
