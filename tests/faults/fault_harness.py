"""Fault injection for real processes: run a ``voxseg`` verb in a subprocess, SIGKILL it
(and every process it started) at a seeded random point, check that every output with a
final name is complete, rerun it, and compare the outputs with those of an uninterrupted
run.

Kill points are measured in CPU seconds of the verb's processes, not in wall-clock time: on
a loaded machine a run may be paused for minutes, and a wall-clock point taken from a slow
uninterrupted run then falls after a faster run has finished. The CPU time a run needs
hardly depends on the load, so a point at a fraction of the uninterrupted run's CPU time
lands at the same place of the work — give or take: under load the CPU seconds of the
same work vary by about ±15 % (measured: 2.9–4.1 CPU s for six uninterrupted ``preprocess``
runs of the same command), so a point late in the run may fall after a faster run's end. The
sweep then aims the same fraction of that faster run's CPU time at a fresh copy (up to
``TRIES`` runs per point) and keeps the lowest whole-run CPU time it has seen for the points
that follow.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TIMEOUT_S = 3600  # wall seconds; generous: on a shared machine a run may be paused for long
_TICK = os.sysconf("SC_CLK_TCK")
#: how often the processes of a session are looked for again (new pool workers)
_RESCAN_S = 0.2
#: runs per kill point when the run keeps finishing before the point
TRIES = 3


@dataclass
class Verb:
    """One command under test, run in ``home`` (a private copy of a prepared workspace).

    ``outputs``: folders (relative to ``home``) whose files are checked and compared;
    ``compare``: glob patterns of the files that must be bit-identical to the uninterrupted
    run (the others, e.g. logs with timings, only have to be complete); ``timings``: keys
    of JSON outputs that hold measured durations, left out of the comparison (the rest of
    the file must be identical); ``rerun``: the arguments of the rerun, given the
    interrupted ``home`` (default: the same command).
    """

    name: str
    args: list[str]
    outputs: list[str]
    compare: list[str] = field(default_factory=lambda: ["*"])
    rerun: Callable[[Path], list[str]] | None = None
    timings: list[str] = field(default_factory=list)


@dataclass
class Reference:
    """What an uninterrupted run wrote (digests of the compared files) and what it took."""

    digest: dict[str, str]
    wall_s: float
    cpu_s: float


@dataclass
class Aim:
    """The CPU seconds a whole run takes, as the sweep knows it: the reference's, lowered to
    that of any run that finished before its kill point."""

    cpu_s: float


@dataclass
class Outcome:
    point_s: float  # CPU seconds of the verb's processes when the kill was due
    killed: bool
    incomplete: list[str]
    rerun_code: int
    differing: list[str]
    tries: int = 1  # runs started for this point (more when a run ended before it)

    @property
    def ok(self) -> bool:
        return not self.incomplete and self.rerun_code == 0 and not self.differing


@dataclass
class Stopped:
    """An interrupted run: exit code, whether the signal was sent before it ended, the CPU
    seconds of its processes in all, and the CPU and wall seconds from the signal to their
    end."""

    code: int
    signalled: bool
    cpu_s: float
    cpu_after_s: float
    wall_after_s: float
    stderr: str


def environment(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(VOXSEG_HOME=str(home), OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    env.pop("VOXSEG_PREPROCESSED", None)
    return env


def command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "voxseg.cli", *args]


def _default_sigint() -> None:
    # a process started from a shell without job control ignores SIGINT; a Ctrl-C test
    # needs Python's own handler (installed at start-up only when SIGINT is not ignored)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args: list[str], home: Path) -> subprocess.Popen:
    """Start the verb in a session of its own (its pid is the session and group id), so
    that every process it starts can be found and killed with it."""
    return subprocess.Popen(
        command(args),
        cwd=home,
        env=environment(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )


def run(args: list[str], home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(args),
        cwd=home,
        env=environment(home),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


class SessionClock:
    """CPU seconds used so far by the processes of one session: their own time and that of
    the children they reaped (``/proc/PID/stat``; a process that has ended but is not yet
    reaped still has its entry)."""

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.pids: set[int] = {sid}
        self.last: dict[int, float] = {}
        self.scanned = 0.0

    def _read(self, pid: int) -> tuple[int, float] | None:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                text = f.read()
        except OSError:
            return None
        fields = text[text.rindex(b")") + 2 :].split()
        # after the name: state ppid pgrp session ... utime(11) stime cutime cstime(14)
        return int(fields[3]), sum(int(x) for x in fields[11:15]) / _TICK

    def seconds(self) -> float:
        now = time.monotonic()
        if now - self.scanned > _RESCAN_S:
            self.scanned = now
            self.pids |= {int(p) for p in os.listdir("/proc") if p.isdigit()}
        for pid in list(self.pids):
            got = self._read(pid)
            if got is None or got[0] != self.sid:
                # reaped: its time is now in its parent's (a process of the session)
                self.pids.discard(pid)
                self.last.pop(pid, None)
                continue
            self.last[pid] = got[1]
        return sum(self.last.values())


def _exited(pid: int) -> bool:
    """Whether ``pid`` has ended, without reaping it (its ``/proc`` entry stays readable)."""
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return info is not None


def run_interrupted(
    args: list[str],
    home: Path,
    at_cpu_s: float | None,
    sig: int = signal.SIGKILL,
    group: bool = True,
    when: Callable[[], bool] | None = None,
) -> Stopped:
    """Start the verb and send ``sig`` once its processes have used ``at_cpu_s`` CPU seconds
    (or, with ``when``, once ``when()`` is true), unless it ended before: to the whole
    process group with ``group`` (a kill of the job, or Ctrl-C in a terminal), else to the
    main process (``kill PID``)."""
    proc = start(args, home)
    clock = SessionClock(proc.pid)
    signalled = False
    cpu_at = wall_at = 0.0
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        cpu = clock.seconds()
        if _exited(proc.pid):
            break
        due = when() if when is not None else cpu >= (at_cpu_s or 0.0)
        if due:
            (os.killpg if group else os.kill)(proc.pid, sig)
            signalled, cpu_at, wall_at = True, cpu, time.monotonic()
            break
        time.sleep(0.01)
    while signalled and not _exited(proc.pid) and time.monotonic() < deadline:
        clock.seconds()
        time.sleep(0.01)
    cpu_end, wall_end = clock.seconds(), time.monotonic()
    _, err = proc.communicate(timeout=TIMEOUT_S)
    if group:  # leftovers of the group (none expected) must not write into the next run
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return Stopped(
        proc.returncode,
        signalled,
        cpu_end,
        cpu_end - cpu_at if signalled else 0.0,
        wall_end - wall_at if signalled else 0.0,
        err,
    )


def files(home: Path, outputs: list[str]) -> dict[str, Path]:
    """Files with a final name (not hidden, not in a hidden folder) under the outputs."""
    found = {}
    for out in outputs:
        root = home / out
        if root.is_file():
            found[out] = root
            continue
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(home)
            if path.is_file() and not any(part.startswith(".") for part in rel.parts):
                found[str(rel)] = path
    return found


def read_back(path: Path) -> None:
    """Open ``path`` with the reader of its kind; raises when it is not complete and valid."""
    name = path.name
    if name.endswith(".json"):
        json.loads(path.read_text())
    elif name.endswith(".safetensors"):
        from safetensors.torch import load_file

        load_file(path)
    elif name.endswith(".b2nd"):
        import blosc2

        blosc2.open(str(path), mode="r")[...]
    elif name.endswith(".npy"):
        np.load(path, allow_pickle=False)
    elif name.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                data[key]
    elif name.endswith(".csv"):
        text = path.read_text()
        widths = {len(row) for row in csv.reader(io.StringIO(text))}
        if len(widths) > 1 or not text.endswith("\n"):
            raise ValueError(f"{path}: ragged or unterminated CSV")
    elif name.endswith(".vtp"):
        from voxseg.io.vtp import read_vtp

        read_vtp(path)
    elif name.endswith(".stl"):  # binary STL: 80-byte header, count, 50 bytes per triangle
        data = path.read_bytes()
        if len(data) < 84 or len(data) != 84 + 50 * int.from_bytes(data[80:84], "little"):
            raise ValueError(f"{path}: {len(data)} bytes is not a complete binary STL")
    elif name.endswith((".nii.gz", ".nii", ".mha", ".nrrd", ".png")):
        from voxseg.io import read_image

        read_image(path)


def incomplete_files(home: Path, outputs: list[str]) -> list[str]:
    bad = []
    for rel, path in files(home, outputs).items():
        try:
            read_back(path)
        except Exception as exc:  # noqa: BLE001 — any failure to read is what we look for
            bad.append(f"{rel}: {type(exc).__name__}: {str(exc)[:120]}")
    return bad


def _content(path: Path, timings: list[str], home: Path) -> bytes:
    """The bytes compared: the file's, or for JSON with ``timings`` keys, the rest of it; in
    JSON and CSV files the run's own folder (each run has its own copy) reads ``$HOME``."""
    if path.suffix not in (".json", ".csv"):
        return path.read_bytes()
    text = path.read_text().replace(str(home), "$HOME")
    if not timings or path.suffix != ".json":
        return text.encode()
    data = json.loads(text)
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in timings}
    return json.dumps(data, sort_keys=True).encode()


def digest(
    home: Path, outputs: list[str], patterns: list[str], timings: list[str] = ()
) -> dict[str, str]:
    return {
        rel: hashlib.sha256(_content(path, list(timings), home)).hexdigest()
        for rel, path in files(home, outputs).items()
        if any(fnmatch.fnmatch(rel, f"*{p}") or fnmatch.fnmatch(path.name, p) for p in patterns)
    }


def reference(verb: Verb, pristine: Path, scratch: Path) -> Reference:
    """Digest, wall and CPU seconds of an uninterrupted run."""
    home = scratch / f"{verb.name}-reference"
    shutil.rmtree(home, ignore_errors=True)  # left by an earlier attempt that failed
    shutil.copytree(pristine, home)
    tic = time.perf_counter()
    done = run_interrupted(verb.args, home, at_cpu_s=None, when=lambda: False)
    seconds = time.perf_counter() - tic
    assert done.code == 0, done.stderr[-2000:]
    return Reference(digest(home, verb.outputs, verb.compare, verb.timings), seconds, done.cpu_s)


def kill_and_rerun(
    verb: Verb,
    pristine: Path,
    scratch: Path,
    expected: dict[str, str],
    fraction: float,
    aim: Aim,
    tag: str,
) -> Outcome:
    """One kill point: a fresh copy, SIGKILL to the verb's process group once it has used
    ``fraction`` of a whole run's CPU seconds, completeness of what it left, rerun, compare.
    A run that ends before the point lowers ``aim`` to its own CPU time, and the point is
    tried again on a fresh copy (at most ``TRIES`` runs)."""
    home = scratch / f"{verb.name}-{tag}"
    tries = 0
    while True:
        tries += 1
        at_cpu_s = fraction * aim.cpu_s
        shutil.rmtree(home, ignore_errors=True)
        shutil.copytree(pristine, home)
        stopped = run_interrupted(verb.args, home, at_cpu_s)
        if stopped.signalled or stopped.code != 0 or tries == TRIES:
            break
        aim.cpu_s = min(aim.cpu_s, stopped.cpu_s)
    incomplete = incomplete_files(home, verb.outputs)
    again = run(verb.rerun(home) if verb.rerun else verb.args, home)
    got = digest(home, verb.outputs, verb.compare, verb.timings) if again.returncode == 0 else {}
    differing = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
    if again.returncode:
        differing.append(f"rerun failed: {again.stderr.strip().splitlines()[-1:]}")
    shutil.rmtree(home, ignore_errors=True)
    killed = stopped.signalled and stopped.code == -signal.SIGKILL
    return Outcome(at_cpu_s, killed, incomplete, again.returncode, differing, tries)


def points(seed: int, n: int) -> list[float]:
    """``n`` kill points spread over the run, as fractions of its CPU time: one per equal
    slice, at a seeded random place in it."""
    rng = np.random.default_rng(seed)
    return [float((i + rng.uniform()) / n) for i in range(n)]


TABLE_HEAD = (
    "| verb | kill points | killed while running | outputs incomplete after the kill "
    "| reruns exit 0 | identical to the uninterrupted run |\n|---|---|---|---|---|---|"
)


def table_row(name: str, outcomes: list[Outcome], ref: Reference) -> str:
    """One line of the sweep table (the reference's CPU and wall seconds after the name)."""
    n = len(outcomes)
    killed = sum(o.killed for o in outcomes)
    incomplete = sum(bool(o.incomplete) for o in outcomes)
    rerun_ok = sum(o.rerun_code == 0 for o in outcomes)
    same = sum(o.rerun_code == 0 and not o.differing for o in outcomes)
    where = f"uninterrupted: {ref.cpu_s:.1f} CPU s, {ref.wall_s:.0f} s wall"
    return f"| `{name}` ({where}) | {n} | {killed} | {incomplete} | {rerun_ok} | {same} |"
