"""Helpers shared by the benchmark scripts (stdlib-only at import time).

Scripts in ``benchmarks/`` run as ``python benchmarks/<name>.py``, so ``import _common``
finds this file in both the project's environment and nnU-Net's (``benchmarks/.venv-nnunet``);
psutil is imported only inside the functions that need it.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-nnunet"
WORK = HERE / "_work"
TORCH_PIN = "torch==2.13.0"


def ensure_nnunet_venv() -> Path:
    """``benchmarks/.venv-nnunet`` with nnunetv2 and the project's torch version; its python."""
    python = VENV / "bin" / "python"
    probe = [str(python), "-c", "import nnunetv2, batchgeneratorsv2"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"creating {VENV} with nnunetv2 (first run only) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    (VENV / ".gitignore").write_text("*\n")  # never committed, like Python 3.13's venvs
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pins:
        pins.write(TORCH_PIN + "\n")
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run(pip + [TORCH_PIN], check=True)
    subprocess.run(pip + ["-c", pins.name, "nnunetv2"], check=True)
    os.unlink(pins.name)
    return python


def nnunet_env(raw: Path, preprocessed: Path, results: Path) -> dict[str, str]:
    """This process's environment for an nnU-Net command: its three folders, no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(nnUNet_raw=str(raw), nnUNet_preprocessed=str(preprocessed))
    env["nnUNet_results"] = str(results)
    return env


@dataclass
class Measured:
    """One measured command: wall time and the peak memory of its whole process tree."""

    command: list[str]
    wall_s: float
    peak_rss_bytes: int  # max over time of the summed RSS (shared pages counted per process)
    peak_pss_bytes: int | None  # same with PSS (shared pages split); None where unavailable
    peak_processes: int
    returncode: int
    log: str

    def to_dict(self) -> dict:
        return asdict(self)


class TreeMemory:
    """Polls a process and all its descendants every ``interval`` s; keeps the peak sums.

    RSS is read at every poll (``/proc/<pid>/statm``: cheap); PSS needs the whole
    ``/proc/<pid>/smaps`` of every process, which for a torch process with thousands of
    mappings cost the polling thread about 30 % of a core at 20 polls a second, taken from
    the command being measured; it is read every ``PSS_INTERVAL`` seconds instead, and the
    tree is listed every ``LIST_INTERVAL`` seconds."""

    PSS_INTERVAL = 1.0
    #: the process tree is listed again this often (every /proc/<pid>/stat is read for it)
    LIST_INTERVAL = 0.5

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import psutil

        self._root = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self.peak_rss = 0
        self.peak_pss: int | None = 0
        self.peak_processes = 0
        self._last_pss = self._listed = -math.inf
        self._procs: list = []
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def start(self) -> TreeMemory:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        import psutil

        now = time.monotonic()
        if now - self._listed >= self.LIST_INTERVAL:
            try:
                self._procs = [self._root, *self._root.children(recursive=True)]
            except psutil.Error:
                return
            self._listed = now
        procs = self._procs
        rss = pss = 0
        with_pss = self.peak_pss is not None and now - self._last_pss >= self.PSS_INTERVAL
        if with_pss:
            self._last_pss = now
        for p in procs:
            try:
                if with_pss:
                    info = p.memory_full_info()
                    rss += info.rss
                    pss += getattr(info, "pss", 0)
                else:
                    rss += p.memory_info().rss
            except psutil.AccessDenied:
                self.peak_pss = None  # PSS needs /proc/<pid>/smaps: fall back to RSS only
            except psutil.Error:
                continue  # the process ended between listing and reading
        self.peak_rss = max(self.peak_rss, rss)
        if with_pss and self.peak_pss is not None:
            self.peak_pss = max(self.peak_pss, pss)
        self.peak_processes = max(self.peak_processes, len(procs))

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)


def run_measured(
    command: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    log: Path,
    interval: float = 0.05,
    check: bool = True,
) -> Measured:
    """Run ``command`` (output to ``log``), measuring wall time and the tree's peak memory."""
    command = [str(c) for c in command]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        mem = TreeMemory(proc.pid, interval).start()
        returncode = proc.wait()
        wall = time.perf_counter() - start
        mem.stop()
    result = Measured(
        command, wall, mem.peak_rss, mem.peak_pss, mem.peak_processes, returncode, str(log)
    )
    if check and returncode:
        tail = log.read_text(errors="replace")[-4000:]
        raise SystemExit(f"{' '.join(command)} failed (exit {returncode}), log {log}:\n{tail}")
    return result


def current_rss_mb() -> float:
    """This process's resident memory now (VmRSS), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024.0
    return float("nan")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table (first column left-aligned, the others right-aligned)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest])

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def machine_info() -> dict[str, object]:
    """What the numbers were measured on."""
    import platform

    import psutil

    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_1m_at_start": os.getloadavg()[0],
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def prepare_organs(work: Path, configuration: str, options, *, num_train: int, num_test: int):
    """``voxseg synth organs`` phantoms in a workspace under ``work``, planned with
    ``options`` (a ``PlannerOptions``) and preprocessed for ``configuration``; returns
    ``(workspace, dataset, plans)``. The phantoms are generated once and reused."""
    from voxseg.data import Dataset
    from voxseg.data.fingerprint import load_or_compute_fingerprint
    from voxseg.planning import plan_dataset, write_plans
    from voxseg.preprocessing.preprocessor import preprocess_dataset
    from voxseg.synth import generate
    from voxseg.workspace import Workspace

    ws = Workspace.from_env(work / "home").ensure()
    raw = ws.raw / "Dataset001_Organs"
    if not (raw / "dataset.json").is_file():
        generate("organs", raw, num_train=num_train, num_test=num_test, seed=0)
    ds = Dataset(raw)
    pre = ws.preprocessed_dataset_dir(ds.name)
    plans = plan_dataset(load_or_compute_fingerprint(ds, pre), ds.info, options)
    write_plans(plans, pre)
    out = ws.preprocessed_dir(ds.name, "default", plans.configuration(configuration).data_from)
    preprocess_dataset(ds, plans, configuration, out)
    return ws, ds, plans
