"""Open reports in the system's headless Chromium through Playwright (tests, screenshots,
benchmarks). Playwright's own browser downloads are never used: Chromium comes from the
system package manager (Debian: ``apt-get install chromium``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

#: Flags for a headless, offline, sandbox-free run (containers, CI).
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def chromium_path() -> Path | None:
    """``$VOXSEG_CHROMIUM``, else ``/usr/bin/chromium``, else ``chromium`` on the PATH."""
    for candidate in (os.environ.get("VOXSEG_CHROMIUM"), "/usr/bin/chromium", "chromium"):
        if candidate and (Path(candidate).is_file() or shutil.which(candidate)):
            return Path(candidate if Path(candidate).is_file() else shutil.which(candidate))
    return None


def launch(playwright: Any, executable: Path | None = None) -> Any:
    """A headless Chromium browser from a ``sync_playwright()`` context."""
    exe = executable or chromium_path()
    if exe is None:
        from voxseg.errors import VoxsegError

        raise VoxsegError("no Chromium found: apt-get install chromium (or set VOXSEG_CHROMIUM)")
    return playwright.chromium.launch(executable_path=str(exe), args=list(CHROMIUM_ARGS))
