"""DICOM-SEG and RTSTRUCT outputs of ``predict`` (``--output-type``), written on one worker
thread so that their cost hides behind the network's:

* when a SEG is asked for, highdicom's one-off work (its import, the DICOM standard tables,
  about 2 CPU s: :func:`voxseg.io.dicom_seg.warm_up`) starts at once, while the first case
  is read and predicted;
* each case's source headers (one pydicom read per slice file) are read while its network
  runs;
* its SEG and RTSTRUCT are written while the label map is written and the next case is
  predicted; at most one case waits for its DICOM objects, so memory holds at most one more
  prediction.

torch, SimpleITK and NumPy release the GIL in their kernels, so this Python work runs beside
them. A case whose DICOM objects fail is reported failed like any other (its label map stays:
a rerun redoes the case because its DICOM files are missing).

The thread is a daemon: a stopped ``predict`` (Ctrl-C, SIGTERM) exits at once rather than
after the DICOM object in progress (minutes for a noisy label map's thousands of contours).
Every object is written to a temporary name and renamed, so one abandoned half-way leaves no
file under its final name, and the rerun writes it again.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from voxseg.io.dicom import DicomSeries, source_datasets

log = logging.getLogger(__name__)


class DicomOutputs:
    """The worker thread and what is pending on it (see the module docstring)."""

    def __init__(
        self,
        types: Sequence[str],
        predictor: Any,
        fractional: bool,
        describe_failure: Callable[[BaseException], str],
    ) -> None:
        self.types = list(types)
        self.predictor = predictor
        self.fractional = fractional
        self.describe_failure = describe_failure
        self.failed: dict[str, str] = {}
        self._pool = _Worker("voxseg-dicom")
        self._sources: Future | None = None
        self._pending: tuple[str, Future] | None = None
        if "dicom-seg" in self.types:
            from voxseg.io.dicom_seg import warm_up

            self._pool.submit(warm_up)  # a failure here shows again in the real write

    def prefetch(self, series: DicomSeries) -> None:
        """Start reading the source headers of the case about to be predicted."""
        self._sources = self._pool.submit(source_datasets, series)

    def submit(self, case_id: str, paths: Sequence[Path], pred: Any, series: DicomSeries) -> None:
        """Queue the DICOM objects of a predicted case (after the previous case's are done)."""
        self._wait()
        sources, self._sources = self._sources, None
        job = self._pool.submit(self._write, paths, pred, series, sources)
        self._pending = (case_id, job)

    def finish(self) -> dict[str, str]:
        """Wait for every write; the cases whose DICOM objects failed, with the reason."""
        self._wait()
        self._pool.close()
        return self.failed

    def _wait(self) -> None:
        if self._pending is None:
            return
        case_id, job = self._pending
        self._pending = None
        try:
            job.result()
        except Exception as exc:  # noqa: BLE001 — reported as the case's failure
            self.failed[case_id] = self.describe_failure(exc)
            log.error("failed %s (DICOM outputs): %s", case_id, exc)

    def _write(
        self, paths: Sequence[Path], pred: Any, series: DicomSeries, sources: Future | None
    ) -> None:
        headers = sources.result() if sources is not None else source_datasets(series)
        for kind, path in zip(self.types, paths, strict=True):
            write_dicom_output(
                kind, path, pred, series, self.predictor, self.fractional, sources=headers
            )


class _Worker:
    """One daemon thread running the submitted calls in order (see the module docstring for
    why not :class:`concurrent.futures.ThreadPoolExecutor`, whose threads the interpreter
    waits for at exit)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self._jobs.put((future, fn, args))
        return future

    def close(self) -> None:
        """Let the thread end once the calls already submitted are done."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 — handed to the waiting caller
                future.set_exception(exc)


def write_dicom_output(
    kind: str,
    path: Path,
    pred: Any,
    series: DicomSeries,
    predictor: Any,
    fractional: bool,
    sources: Sequence[Any] | None = None,
) -> None:
    """One DICOM-SEG or RTSTRUCT of a prediction on its source series."""
    from voxseg.io.dicom_seg import write_dicom_seg
    from voxseg.io.rtstruct import write_rtstruct

    model = predictor.model
    labels = {k: v for k, v in model.info.labels.items() if isinstance(v, int)}
    name = Path(model.folder).name
    plan = str(getattr(model.config, "configuration", ""))
    if kind == "dicom-seg":
        data = pred.probabilities.array if fractional else pred.segmentation.array
        write_dicom_seg(
            data,
            series,
            labels,
            path,
            fractional=fractional,
            model_name=name,
            plan=plan,
            sources=sources,
        )
    else:
        write_rtstruct(
            pred.segmentation.array,
            series,
            labels,
            path,
            structure_set_label=name,
            description=f"voxseg {name} ({plan})",
            sources=sources,
        )
