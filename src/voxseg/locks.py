"""Folder locks: one run at a time writes a model fold, a preprocessed configuration or a
prediction folder.

A lock is a small JSON file in the folder (holder PID, host, start time, command). It is
created atomically with ``os.link`` of a private temporary file (atomic on local disks and
on NFS, unlike ``O_EXCL`` on old NFS clients and unlike ``fcntl`` locks, which some shared
file systems ignore), so a second run finds it and refuses with a message naming the holder.
While held, a heartbeat thread touches the file; a lock is stale, and is taken over with a
warning, when its holder is gone on this host or when its last heartbeat is older than
``VOXSEG_LOCK_STALE_SECONDS`` (default 600; for holders on other hosts of a shared folder,
or a suspended process). A lock is re-entrant within one process (a pipeline that predicts
into a folder it already holds).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from voxseg.errors import VoxsegError

log = logging.getLogger(__name__)

LOCK_NAME = ".voxseg.lock"
STALE_ENV = "VOXSEG_LOCK_STALE_SECONDS"
DEFAULT_STALE_SECONDS = 600.0

_held: dict[Path, int] = {}
_held_guard = threading.Lock()


@dataclass(frozen=True)
class LockHolder:
    """What a lock file says about the run holding it."""

    pid: int
    host: str
    started: str
    command: str
    token: str

    @classmethod
    def me(cls) -> LockHolder:
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python",
            token=uuid.uuid4().hex,
        )

    def describe(self) -> str:
        return f"'{self.command}' (PID {self.pid} on {self.host}, since {self.started})"


def stale_seconds() -> float:
    """Heartbeat age after which a lock counts as abandoned (``VOXSEG_LOCK_STALE_SECONDS``)."""
    raw = os.environ.get(STALE_ENV)
    try:
        return float(raw) if raw else DEFAULT_STALE_SECONDS
    except ValueError as exc:
        raise VoxsegError(f"{STALE_ENV}={raw!r}: give a number of seconds") from exc


def _read(path: Path) -> LockHolder | None:
    try:
        data = json.loads(path.read_text())
        return LockHolder(**{k: data[k] for k in LockHolder.__dataclass_fields__})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):  # a torn or foreign file: treat as unknown
        return LockHolder(pid=-1, host="?", started="?", command="unreadable lock file", token="")


def _alive_here(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def why_stale(path: Path, holder: LockHolder) -> str | None:
    """Why the lock at ``path`` is abandoned, or ``None`` while its holder may be running."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return "it was just released"
    if holder.host == socket.gethostname() and holder.pid > 0 and not _alive_here(holder.pid):
        return "its process is gone"
    limit = stale_seconds()
    if age > limit:
        return f"no heartbeat for {age:.0f} s (> {STALE_ENV}={limit:g})"
    return None


def _try_create(path: Path, me: LockHolder) -> bool:
    tmp = path.with_name(f"{path.name}.{me.token}.tmp")
    try:
        tmp.write_text(json.dumps(asdict(me)))
    except OSError as exc:  # a read-only folder, a full disk
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise VoxsegError(
            f"{path.parent}: cannot write into this folder ({exc.strerror})"
        ) from None
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: exclusive create instead
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(asdict(me)))
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _take_over(path: Path, holder: LockHolder, reason: str) -> None:
    """Move the stale lock aside, making sure it is the one judged stale (another run may
    have taken it over meanwhile; then its fresh lock is put back)."""
    aside = path.with_name(f"{path.name}.{uuid.uuid4().hex}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    moved = _read(aside)
    if moved is not None and moved.token != holder.token:
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        aside.unlink(missing_ok=True)
        return
    aside.unlink(missing_ok=True)
    log.warning("%s: taking over the stale lock of %s: %s", path.parent, holder.describe(), reason)


def _heartbeat(path: Path, token: str, stop: threading.Event) -> None:
    interval = max(1.0, min(60.0, stale_seconds() / 4))
    while not stop.wait(interval):
        holder = _read(path)
        if holder is None or holder.token != token:
            return
        try:
            os.utime(path)
        except OSError:
            return


@contextmanager
def folder_lock(
    folder: str | os.PathLike[str], what: str, *, name: str = LOCK_NAME
) -> Iterator[Path]:
    """Hold the lock of ``folder`` (created if needed) while the body writes into it.

    ``what`` names the folder's role in the refusal (``"model fold"``, ...). Raises a
    :class:`VoxsegError` naming the holder when another live run holds it.
    """
    folder = Path(folder)
    path = (folder / name).absolute()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VoxsegError(f"{folder}: cannot create the {what} ({exc.strerror})") from None
    with _held_guard:
        if path in _held:
            _held[path] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield path
        finally:
            with _held_guard:
                _held[path] -= 1
        return
    me = LockHolder.me()
    for _ in range(5):
        if _try_create(path, me):
            break
        holder = _read(path)
        if holder is None:
            continue
        reason = why_stale(path, holder)
        if reason is None:
            raise VoxsegError(
                f"{folder}: this {what} is in use by {holder.describe()}; wait for that run to "
                f"finish (or stop it), or delete {path} if it is no longer running"
            )
        _take_over(path, holder, reason)
    else:
        raise VoxsegError(f"{path}: could not take the lock (it keeps changing hands)")
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, me.token, stop), daemon=True)
    beat.start()
    with _held_guard:
        _held[path] = 1
    try:
        yield path
    finally:
        with _held_guard:
            del _held[path]
        stop.set()
        holder = _read(path)
        if holder is not None and holder.token == me.token:
            path.unlink(missing_ok=True)
