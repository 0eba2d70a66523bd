"""Fault injection for real processes: run a ``voxseg`` verb in a subprocess, SIGKILL it
after a seeded random delay, check that every output with a final name is complete,
rerun it, and compare the outputs with those of an uninterrupted run."""

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

TIMEOUT_S = 600


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
class Outcome:
    delay_s: float
    killed: bool
    incomplete: list[str]
    rerun_code: int
    differing: list[str]

    @property
    def ok(self) -> bool:
        return not self.incomplete and self.rerun_code == 0 and not self.differing


def environment(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(VOXSEG_HOME=str(home), OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    env.pop("VOXSEG_PREPROCESSED", None)
    return env


def command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "voxseg.cli", *args]


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


def run_killed(args: list[str], home: Path, delay_s: float, sig: int = signal.SIGKILL) -> int:
    """Start the verb, send ``sig`` after ``delay_s`` (if still running); its exit code."""
    proc = subprocess.Popen(
        command(args),
        cwd=home,
        env=environment(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        proc.wait(timeout=delay_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
    _, proc.stderr_text = proc.communicate(timeout=TIMEOUT_S)  # type: ignore[attr-defined]
    return proc.returncode


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


def _content(path: Path, timings: list[str]) -> bytes:
    """The bytes compared: the file's, or for JSON with ``timings`` keys, the rest of it."""
    if not timings or path.suffix != ".json":
        return path.read_bytes()
    data = json.loads(path.read_text())
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in timings}
    return json.dumps(data, sort_keys=True).encode()


def digest(
    home: Path, outputs: list[str], patterns: list[str], timings: list[str] = ()
) -> dict[str, str]:
    return {
        rel: hashlib.sha256(_content(path, list(timings))).hexdigest()
        for rel, path in files(home, outputs).items()
        if any(fnmatch.fnmatch(rel, f"*{p}") or fnmatch.fnmatch(path.name, p) for p in patterns)
    }


def reference(verb: Verb, pristine: Path, scratch: Path) -> tuple[dict[str, str], float]:
    """Digest and duration of an uninterrupted run."""
    home = scratch / f"{verb.name}-reference"
    shutil.rmtree(home, ignore_errors=True)  # left by an earlier attempt that failed
    shutil.copytree(pristine, home)
    tic = time.perf_counter()
    done = run(verb.args, home)
    seconds = time.perf_counter() - tic
    assert done.returncode == 0, done.stderr[-2000:]
    return digest(home, verb.outputs, verb.compare, verb.timings), seconds


def kill_and_rerun(
    verb: Verb, pristine: Path, scratch: Path, expected: dict[str, str], delay_s: float, tag: str
) -> Outcome:
    """One kill point: a fresh copy, SIGKILL after ``delay_s``, completeness, rerun, compare."""
    home = scratch / f"{verb.name}-{tag}"
    shutil.copytree(pristine, home)
    code = run_killed(verb.args, home, delay_s)
    incomplete = incomplete_files(home, verb.outputs)
    again = run(verb.rerun(home) if verb.rerun else verb.args, home)
    got = digest(home, verb.outputs, verb.compare, verb.timings) if again.returncode == 0 else {}
    differing = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
    if again.returncode:
        differing.append(f"rerun failed: {again.stderr.strip().splitlines()[-1:]}")
    shutil.rmtree(home, ignore_errors=True)
    return Outcome(delay_s, code == -signal.SIGKILL, incomplete, again.returncode, differing)


def delays(seed: int, n: int, duration_s: float) -> list[float]:
    """``n`` kill delays spread over the run: one per equal slice, at a seeded random place."""
    rng = np.random.default_rng(seed)
    return [float(duration_s * (i + rng.uniform()) / n) for i in range(n)]
