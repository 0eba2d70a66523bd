"""voxseg: from a new medical imaging dataset to a trained segmentation model to inference."""

from voxseg.errors import VoxsegError

__version__ = "0.1.0"

__all__ = ["VoxsegError", "__version__"]
