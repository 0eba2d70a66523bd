"""Process pools that stop with their verb.

Ctrl-C in a terminal sends SIGINT to every process of the job: workers that took it would
each print a ``KeyboardInterrupt`` traceback, and ``ProcessPoolExecutor``'s exit would run
every queued item before the verb could stop. Here workers ignore SIGINT and SIGTERM stops
them at once (the verb's own process decides), and when the verb is interrupted (Ctrl-C,
SIGTERM, an error) the queued items are cancelled and the running ones ended. What a worker
was writing is lost, never half-written: outputs are written to hidden temporary names and
renamed, and a rerun redoes the unfinished items.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing.context import BaseContext
from typing import Any


@contextmanager
def worker_pool(
    workers: int,
    *,
    context: BaseContext | None = None,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Iterator[ProcessPoolExecutor]:
    """``with worker_pool(2) as pool: pool.map(...)``: a ``ProcessPoolExecutor`` whose
    workers leave interruption to the main process, and which ends them when the ``with``
    block is left by an exception (``KeyboardInterrupt`` included)."""
    if context is not None and context.get_start_method() == "forkserver":
        _start_forkserver()
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(initializer, initargs)
    )
    try:
        _launch(pool)
        yield pool
    except BaseException:
        stop(pool)
        raise
    pool.shutdown(wait=True)


def stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued items and end the running workers now."""
    # ProcessPoolExecutor has no public way to end running workers before Python 3.14
    # (terminate_workers); its process table is the only handle on them
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        proc.terminate()
    for proc in processes:
        proc.join(timeout=10)


def _launch(pool: ProcessPoolExecutor) -> None:
    """Start every worker now, with Ctrl-C and SIGTERM deferred until all have started: a
    worker whose start the interruption cut (its process forked, the pool not yet told) would
    find the pool's queues gone and die in a traceback. A signal that comes meanwhile is
    raised again as soon as the workers run (the fork server's preloading takes seconds).
    Handlers, not a signal mask: a signal sent to the process reaches any of its threads."""
    launch = getattr(pool, "_launch_processes", None)  # all at once, as for fork (3.9+)
    if launch is None or threading.current_thread() is not threading.main_thread():
        return
    pending: list[int] = []

    def defer(signum: int, frame: Any) -> None:
        pending.append(signum)

    previous = {sig: signal.signal(sig, defer) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        launch()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(pending):
            signal.raise_signal(sig)


def _start_worker(initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a forked worker inherits the CLI's SIGTERM handler, which raises like Ctrl-C (and a
    # pool worker would pass that on as the item's result and go on): end it instead
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if initializer is not None:
        initializer(*initargs)


def _start_forkserver() -> None:
    """Start the fork server with SIGINT ignored: it keeps that disposition (and passes it to
    the workers it forks) instead of dying in a traceback while it imports its preloads."""
    from multiprocessing import forkserver

    if threading.current_thread() is not threading.main_thread():
        forkserver.ensure_running()
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)
