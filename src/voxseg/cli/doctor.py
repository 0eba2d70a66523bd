"""``voxseg doctor``: versions, torch devices and workspace paths."""

from __future__ import annotations

import platform
from importlib import metadata

from rich.table import Table

from voxseg import __version__
from voxseg.cli._app import HomeOption, app, console, user_errors
from voxseg.workspace import Workspace

PACKAGES = (
    "torch",
    "numpy",
    "scipy",
    "SimpleITK",
    "nibabel",
    "pydicom",
    "blosc2",
    "monai",
    "dynamic-network-architectures",
    "vtk",
    "kimimaro",
    "connected-components-3d",
    "edt",
)


@app.command()
@user_errors
def doctor(home: str | None = HomeOption) -> None:
    """Print versions, the torch device and the workspace paths."""
    import torch

    table = Table(title=f"voxseg {__version__}", show_header=False)
    table.add_row("python", platform.python_version())
    for name in PACKAGES:
        try:
            table.add_row(name, metadata.version(name))
        except metadata.PackageNotFoundError:
            table.add_row(name, "[red]not installed[/]")
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    device = (
        f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} device(s))"
        if cuda
        else ("mps" if mps else "cpu")
    )
    table.add_row("torch device", device)
    table.add_row("torch threads", str(torch.get_num_threads()))
    ws = Workspace.from_env(home)
    table.add_row("workspace", str(ws.root))
    table.add_row("preprocessed", str(ws.preprocessed_root))
    console.print(table)
