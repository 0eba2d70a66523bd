"""Importers: other dataset layouts → the raw format (nnU-Net v2), checked at the end."""

from voxseg.data.importers.dicom import import_dicom
from voxseg.data.importers.folder2d import import_folder2d
from voxseg.data.importers.msd import import_msd
from voxseg.data.importers.ovseg import import_ovseg
from voxseg.data.importers.seqseg import import_seqseg

__all__ = ["import_dicom", "import_folder2d", "import_msd", "import_ovseg", "import_seqseg"]
