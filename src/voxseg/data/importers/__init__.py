"""Importers: other dataset layouts → the raw format (nnU-Net v2), checked at the end.

Each importer is loaded when it is first used: the SeqSeg importer needs VTK (seconds to
import), which a DICOM or MSD import, and the worker processes it starts, never need.
"""

from importlib import import_module

from voxseg.data.importers._common import (
    already_imported,
    import_request,
    unfinished_while,
    write_import_stamp,
)

_IMPORTERS = {
    "import_dicom": "dicom",
    "import_folder2d": "folder2d",
    "import_msd": "msd",
    "import_ovseg": "ovseg",
    "import_seqseg": "seqseg",
}


def __getattr__(name: str):
    if name in _IMPORTERS:
        return getattr(import_module(f"{__name__}.{_IMPORTERS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    *_IMPORTERS,
    "already_imported",
    "import_request",
    "unfinished_while",
    "write_import_stamp",
]
