"""Process pools that stop with their verb (voxseg.workers)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from voxseg.workers import worker_pool


def _interrupt_self() -> str:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)  # the signal is handled (or not) before the function returns
    return "went on"


def test_workers_ignore_ctrl_c():
    # Ctrl-C reaches every process of the job; a worker goes on and the verb decides
    with worker_pool(2) as pool:
        assert pool.submit(_interrupt_self).result(timeout=120) == "went on"


def test_leaving_the_pool_by_an_interruption_ends_its_work():
    """Queued items are cancelled and running ones ended (a plain ProcessPoolExecutor would
    run all four sleeps to completion before letting the exception through)."""
    with pytest.raises(KeyboardInterrupt):
        with worker_pool(2) as pool:
            futures = [pool.submit(time.sleep, 60) for _ in range(4)]
            while not any(f.running() for f in futures):
                time.sleep(0.05)
            pids = list(pool._processes)
            raise KeyboardInterrupt
    # no blocking wait: on a loaded machine a paused test would time out on a wall clock
    finished = [f for f in futures if f.done() and not f.cancelled() and f.exception() is None]
    assert finished == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
