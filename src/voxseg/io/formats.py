"""Read and write images by file ending (or DICOM folder), keeping geometry.

* Volumes: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr`` + data file), MetaImage
  (``.mha``, ``.mhd`` + ``.raw``/``.zraw``) through SimpleITK, geometry kept exactly (NIfTI
  stores its affine as float32); a plain ``.nii.gz`` is inflated by ISA-L when python-isal
  is installed (:mod:`voxseg.io.nifti`: same array and geometry, about 1.5× faster).
* DICOM: a folder holding one series is read with pydicom (several series: name one, see
  :func:`read_dicom_series`; :mod:`voxseg.io.dicom`); :func:`write_dicom_series` writes one
  file per slice with its ImagePositionPatient and rescale. RTSTRUCT and DICOM-SEG label maps:
  :mod:`voxseg.io.rtstruct`, :mod:`voxseg.io.dicom_seg`.
* 2D natural images: PNG, BMP, JPEG through Pillow (in-plane spacing 1.0, as in nnU-Net),
  TIFF through SimpleITK (spacing from its resolution tags, stacks allowed). RGB(A) becomes
  3 channels ``[3, 1, y, x]`` (alpha dropped), grayscale ``[1, y, x]``, both pseudo-3D with
  z spacing :data:`~voxseg.io.image.PSEUDO_3D_SPACING`. JPEG is refused for label maps: its
  lossy compression changes label values.
* A single ``.dcm`` file is read through SimpleITK; series are written with
  :func:`write_dicom_series`.

Every write is atomic: files are written into a hidden folder beside the target and moved in
place (companion data files first, the header last).
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from voxseg.config import new_file_mode
from voxseg.errors import VoxsegError
from voxseg.io.gz import gzip_file
from voxseg.io.header import DAMAGED, check_claimed_size, read_header, require_memory
from voxseg.io.image import PSEUDO_3D_SPACING, Geometry, Image, from_sitk, to_sitk
from voxseg.io.nifti import map_nifti, read_nifti_gz, write_nifti_region

VOLUME_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
NATURAL_ENDINGS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
LOSSY_ENDINGS = (".jpg", ".jpeg")
PILLOW_ENDINGS = (".png", ".bmp", ".jpg", ".jpeg")
DICOM_ENDINGS = (".dcm",)
SUPPORTED_ENDINGS = VOLUME_ENDINGS + NATURAL_ENDINGS + DICOM_ENDINGS

#: Largest integer each natural-image format stores losslessly (TIFF keeps any dtype).
_NATURAL_MAX = {".png": 65535, ".bmp": 255, ".jpg": 255, ".jpeg": 255}


def file_ending(path: str | os.PathLike[str]) -> str:
    """The ending that picks the format: ``.nii.gz`` counts as one ending."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def read_image(path: str | os.PathLike[str], is_label: bool = False, copy: bool = True) -> Image:
    """Read an image file, or the DICOM series in a folder, with its geometry.

    ``is_label`` refuses lossy formats (JPEG), reads palette PNGs as their indices and
    collapses an RGB label image whose three channels are equal to one channel.
    ``copy=False``: a volume read by SimpleITK may come back as a read-only array over its
    buffer (:func:`voxseg.io.image.from_sitk`), for readers that only look.
    """
    path = Path(path)
    if not path.exists():
        raise VoxsegError(f"{path}: file not found")
    if path.is_dir():
        return read_dicom_series(path)
    ending = file_ending(path)
    if is_label and ending in LOSSY_ENDINGS:
        raise VoxsegError(
            f"{path}: JPEG cannot hold a label map (lossy compression changes label values); "
            "save the mask as .png, .tif or .nii.gz"
        )
    if ending in PILLOW_ENDINGS:
        return _read_pillow(path, is_label)
    header = read_header(path)
    if ending in VOLUME_ENDINGS:
        check_claimed_size(header)
    # SimpleITK's buffer plus the NumPy copy made from it
    require_memory(2 * header.nbytes, f"reading {path}", "read it on a machine with more memory")
    if ending == ".nii.gz":
        fast = read_nifti_gz(path)  # ISA-L inflation; it checks the stream's length itself
        if fast is not None:
            fast.array.flags.writeable = copy  # the same contract as SimpleITK's views
            return fast
    if ending in (".nii", ".nii.gz"):
        _check_nifti_complete(path)
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise VoxsegError(f"{path}: {_DAMAGED} ({_first_line(exc)})") from exc
    image = from_sitk(img, copy=copy)
    if ending in (".tif", ".tiff"):
        _check_tiff_complete(path, image.shape[0])
    if ending in NATURAL_ENDINGS:
        image = _natural_channels(image, path, is_label)
    return image


def write_image(
    image: Image, path: str | os.PathLike[str], compress: bool = True, fast_gzip: bool = False
) -> Path:
    """Write ``image`` to ``path`` (format from the ending), atomically.

    A pseudo-3D image (z of size 1) written to PNG, BMP, TIFF or JPEG loses its z axis;
    channels ``[3, 1, y, x]`` become RGB. PNG stores uint8/uint16, BMP and JPEG uint8: arrays
    are converted when that is lossless and refused otherwise. ``fast_gzip``: a ``.nii.gz``
    is written by SimpleITK uncompressed and deflated by ISA-L (:mod:`voxseg.io.gz`,
    about 3× less CPU, a file a few per cent larger; the same NIfTI inside).
    """
    path = Path(path)
    ending = file_ending(path)
    if ending in DICOM_ENDINGS:
        raise VoxsegError(f"{path}: write DICOM with write_dicom_series(image, folder)")
    if ending not in SUPPORTED_ENDINGS:
        raise VoxsegError(
            f"{path}: unknown image file ending {ending!r}; use one of "
            + ", ".join(VOLUME_ENDINGS + NATURAL_ENDINGS)
        )
    if image.array.dtype == np.bool_:
        image = image.with_array(image.array.astype(np.uint8))
    if ending in PILLOW_ENDINGS:
        plane, _ = _natural_plane(image, path, ending)
        with _atomic_dir(path) as tmp:
            _write_pillow(plane, tmp / path.name, ending)
        return path
    img = _natural_to_sitk(image, path, ending) if ending in NATURAL_ENDINGS else to_sitk(image)
    with _atomic_dir(path) as tmp:
        if fast_gzip and compress and ending == ".nii.gz":
            plain = tmp / path.name[: -len(".gz")]
            sitk.WriteImage(img, str(plain), useCompression=False)
            gzip_file(plain, tmp / path.name)
            plain.unlink()
        else:
            sitk.WriteImage(img, str(tmp / path.name), useCompression=compress)
        _check_written(tmp / path.name, path)
    return path


def read_image_on_disk(path: str | os.PathLike[str], scratch: str | os.PathLike[str]) -> Image:
    """:func:`read_image` for a reader that looks at small parts of a large image (a tracer
    following a vessel through a whole-body CT): a plain 3D NIfTI keeps its voxels on disk
    (a read-only memory map; a ``.nii.gz`` is inflated once into an unnamed temporary file in
    the folder ``scratch``, see :func:`voxseg.io.nifti.map_nifti`), so only the parts read
    use memory. Any other file, or a scratch disk without room for the voxels, is read whole
    as :func:`read_image` reads it."""
    path = Path(path)
    if not path.is_file() or file_ending(path) not in (".nii", ".nii.gz"):
        return read_image(path)
    header = read_header(path)
    check_claimed_size(header)
    if shutil.disk_usage(scratch).free < 2 * header.nbytes:
        return read_image(path)
    mapped = map_nifti(path, scratch)  # None for a file cut short: read_image names it
    return mapped if mapped is not None else read_image(path)


def write_image_region(
    path: str | os.PathLike[str], geometry: Geometry, block: np.ndarray, lo: Sequence[int]
) -> Path:
    """Write the image of the grid ``geometry`` that holds ``block`` (``[z, y, x]``) at index
    ``lo`` and zeros elsewhere (a label map whose labels lie in one box), atomically. A NIfTI
    is written slab by slab (:func:`voxseg.io.nifti.write_nifti_region`), so the whole grid
    is never in memory; other formats are written whole by :func:`write_image`."""
    path = Path(path)
    block = np.asarray(block)
    if block.dtype == np.bool_:
        block = block.astype(np.uint8)
    if file_ending(path) not in (".nii", ".nii.gz"):
        full = np.zeros(geometry.shape, block.dtype)
        full[tuple(slice(a, a + n) for a, n in zip(lo, block.shape, strict=True))] = block
        return write_image(Image.from_geometry(full, geometry), path)
    with _atomic_dir(path) as tmp:
        write_nifti_region(tmp / path.name, geometry, block, lo)
        _check_written(tmp / path.name, path)
    return path


def _check_written(written: Path, target: Path) -> None:
    """ITK does not report every failed write (a full disk leaves an empty or cut file):
    read the header back, and for NIfTI the data length, before the file gets its name."""
    try:
        read_header(written)
        if file_ending(written) in (".nii", ".nii.gz"):
            _check_nifti_complete(written)
    except VoxsegError:
        free = shutil.disk_usage(written.parent).free
        raise VoxsegError(
            f"{target}: the image could not be written completely ({free} bytes free on its "
            "disk); nothing was left under this name"
        ) from None


def read_channels(paths: Sequence[str | os.PathLike[str]]) -> Image:
    """Read one file per channel (or multi-channel files) into one ``[c, z, y, x]`` image.

    Every file must share the geometry of the first; the message names the file that does not.
    """
    if not paths:
        raise ValueError("read_channels needs at least one path")
    images = [read_image(p) for p in paths]
    first = images[0].geometry
    arrays = []
    for p, im in zip(paths, images, strict=True):
        diffs = first.differences(im.geometry)
        if diffs:
            raise VoxsegError(f"{p}: geometry differs from {paths[0]}: " + "; ".join(diffs))
        arrays.extend(im.array if im.array.ndim == 4 else [im.array])
    dtype = np.result_type(*arrays)
    return Image(np.stack([a.astype(dtype, copy=False) for a in arrays]), *_geom(images[0]))


def read_dicom_series(folder: str | os.PathLike[str], series: str | None = None) -> Image:
    """Read the DICOM image series in ``folder`` (searched recursively); a folder holding
    several needs ``series`` (``uid:…``, ``desc:…``: :func:`voxseg.io.dicom.series_matches`),
    else the error lists them. See :mod:`voxseg.io.dicom` for slice order, geometry and
    pixel values."""
    from voxseg.io.dicom import read_dicom_folder

    return read_dicom_folder(folder, series=series)[0]


def write_dicom_series(
    image: Image, folder: str | os.PathLike[str], modality: str = "CT", description: str = ""
) -> Path:
    """Write a 3D image as a DICOM series (see :func:`voxseg.io.dicom.write_dicom_series`)."""
    from voxseg.io.dicom import write_dicom_series as write

    return write(image, folder, modality, description)


def _natural_channels(image: Image, path: Path, is_label: bool) -> Image:
    """RGBA → RGB, gray+alpha → gray; labels must be single-channel (or equal RGB)."""
    arr = image.array
    if arr.ndim == 4 and arr.shape[0] in (2, 4):
        arr = arr[:-1]
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if is_label and arr.ndim == 4:
        if not all(np.array_equal(arr[0], c) for c in arr[1:]):
            raise VoxsegError(
                f"{path}: a label image must be grayscale (one value per pixel); this one has "
                f"{arr.shape[0]} different colour channels"
            )
        arr = arr[0]
    return image.with_array(np.ascontiguousarray(arr)) if arr is not image.array else image


def _natural_to_sitk(image: Image, path: Path, ending: str) -> sitk.Image:
    """A SimpleITK image for TIFF: 2D (scalar or RGB vector), or a 3D scalar stack."""
    if image.shape[0] != 1 and image.array.ndim == 3:
        return to_sitk(image)
    plane, spacing = _natural_plane(image, path, ending)
    is_rgb = plane.ndim == 3
    img = sitk.GetImageFromArray(np.moveaxis(plane, 0, -1) if is_rgb else plane, isVector=is_rgb)
    img.SetSpacing(tuple(reversed(spacing)))
    return img


def _natural_plane(image: Image, path: Path, ending: str) -> tuple[np.ndarray, tuple]:
    """The 2D plane ``[y, x]`` or ``[3, y, x]`` of a pseudo-3D image, and its (y, x) spacing."""
    arr = image.array
    if image.shape[0] != 1:
        raise VoxsegError(
            f"{path}: {ending} holds 2D images; this image has {image.shape[0]} slices "
            "(write volumes as .nii.gz)"
        )
    if arr.ndim == 4 and arr.shape[0] not in (1, 3):
        raise VoxsegError(f"{path}: {ending} holds 1 or 3 channels; this image has {arr.shape[0]}")
    plane = arr[:, 0] if arr.ndim == 4 else arr[0]
    if plane.ndim == 3 and plane.shape[0] == 1:
        plane = plane[0]
    limit = _NATURAL_MAX.get(ending)
    if limit is not None:
        plane = _to_uint(plane, 255 if plane.ndim == 3 else limit, path, ending)
    return np.ascontiguousarray(plane), image.spacing[1:]


def _read_pillow(path: Path, is_label: bool) -> Image:
    """PNG/BMP/JPEG through Pillow, which reports the colour mode (grey, palette, alpha).

    In-plane spacing is 1.0 whatever the DPI field says (a print resolution, not a voxel
    size), as in nnU-Net's natural-image reader.
    """
    from PIL import Image as PILImage  # only natural images need Pillow

    try:
        with PILImage.open(path) as pil:
            pil.load()
            mode = pil.mode
            if mode in ("P", "PA") and is_label:
                pil = pil.convert("P") if mode == "PA" else pil
            elif mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBA", "RGBX"):
                pil = pil.convert("RGB")
            elif mode in ("LA", "La"):
                pil = pil.getchannel(0)
            arr = np.asarray(pil)
    except (OSError, ValueError, SyntaxError) as exc:
        raise VoxsegError(f"{path}: {_DAMAGED} ({exc})") from exc
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.ndim == 3:
        arr = np.moveaxis(arr, -1, 0)[:, None]
    else:
        arr = arr[None]
    image = Image(np.ascontiguousarray(arr), spacing=(PSEUDO_3D_SPACING, 1.0, 1.0))
    return _natural_channels(image, path, is_label)


def _write_pillow(plane: np.ndarray, path: Path, ending: str) -> None:
    """Save a ``[y, x]`` or ``[3, y, x]`` plane (spacing is not stored, see _read_pillow)."""
    from PIL import Image as PILImage

    pil = PILImage.fromarray(np.moveaxis(plane, 0, -1) if plane.ndim == 3 else plane)
    fmt = {".png": "PNG", ".bmp": "BMP", ".jpg": "JPEG", ".jpeg": "JPEG"}[ending]
    extra = {"quality": 95} if fmt == "JPEG" else {}
    pil.save(path, format=fmt, **extra)


def _to_uint(arr: np.ndarray, limit: int, path: Path, ending: str) -> np.ndarray:
    """uint8 (or uint16 when ``limit`` allows and values need it); refuses lossy casts."""
    dtype = np.uint8 if limit == 255 or (arr.size and arr.max() <= 255) else np.uint16
    if arr.dtype == dtype:
        return arr
    if arr.size and (arr.min() < 0 or arr.max() > limit or not np.all(np.mod(arr, 1) == 0)):
        raise VoxsegError(
            f"{path}: {ending} stores whole numbers 0..{limit}; the array ({arr.dtype}, "
            f"range {arr.min():g}..{arr.max():g}) would be changed (use .tif or .nii.gz)"
        )
    return arr.astype(dtype)


def _geom(image: Image) -> tuple:
    return image.spacing, image.origin, image.direction


class _atomic_dir:
    """Write into a hidden temporary folder beside ``target``, then move into place.

    For a file target every file produced (e.g. ``.mhd`` with its ``.zraw``) is moved beside
    it, the header (the target name) last; a folder target (absent or empty) is the renamed
    temporary folder.
    """

    def __init__(self, target: Path, is_folder: bool = False) -> None:
        self.target = Path(target)
        self.is_folder = is_folder

    def __enter__(self) -> Path:
        parent = self.target.parent
        parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=parent))
        self.tmp.chmod(new_file_mode(directory=True))  # a folder target keeps it
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._commit()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _commit(self) -> None:
        if self.is_folder:
            if self.target.is_dir() and not any(self.target.iterdir()):
                self.target.rmdir()
            os.rename(self.tmp, self.target)
            return
        produced = sorted(self.tmp.iterdir(), key=lambda f: f.name == self.target.name)
        for f in produced:
            os.replace(f, self.target.parent / f.name)


def _check_nifti_complete(path: Path) -> None:
    """Raise when a NIfTI file holds fewer bytes than its header promises.

    ITK reads a truncated NIfTI without complaint (the missing voxels come back as zeros).
    For ``.nii.gz`` the gzip trailer's size field is compared first (O(1)); only when it
    disagrees (truncation, or a multi-member gzip) is the stream decompressed to count.
    """
    try:
        reader = sitk.ImageFileReader()  # reads the header only
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        meta = reader.GetMetaData  # NIfTI header fields as text
        dims = [int(meta(f"dim[{i}]")) for i in range(1, int(meta("dim[0]")) + 1)]
        voxels = int(np.prod(dims, dtype=np.int64))
        expected = int(float(meta("vox_offset"))) + voxels * int(meta("bitpix")) // 8
    except (RuntimeError, KeyError, ValueError) as exc:
        raise VoxsegError(f"{path}: {_DAMAGED} (NIfTI header: {_first_line(exc)})") from exc
    if file_ending(path) == ".nii":
        actual = path.stat().st_size
    else:
        with open(path, "rb") as f:
            f.seek(max(path.stat().st_size - 4, 0))
            if int.from_bytes(f.read(4), "little") == expected % 2**32:
                return
        actual = _gunzipped_size(path)
    if actual < 0:
        raise VoxsegError(f"{path}: {_DAMAGED} (the gzip stream is cut short or corrupt)")
    if actual < expected:
        raise VoxsegError(
            f"{path}: {_DAMAGED} (header promises {expected} bytes, file holds {actual})"
        )


def _gunzipped_size(path: Path) -> int:
    """Decompressed length of a gzip file; -1 when the stream is cut or corrupt."""
    size = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                size += len(chunk)
    except (EOFError, OSError, zlib.error):
        return -1
    return size


def _check_tiff_complete(path: Path, num_slices: int) -> None:
    """Raise when a TIFF lost pages or pixel data (libtiff only warns, ITK returns zeros)."""
    import tifffile

    size = path.stat().st_size
    warnings = _LogCapture()
    log = logging.getLogger("tifffile")
    log.addHandler(warnings)
    try:
        with tifffile.TiffFile(path) as tif:
            pages = list(tif.pages)
            in_file = all(
                off + n <= size
                for page in pages
                for off, n in zip(page.dataoffsets, page.databytecounts, strict=True)
            )
            numbered = [p.tags["PageNumber"].value for p in pages if "PageNumber" in p.tags]
    except (tifffile.TiffFileError, OSError, ValueError) as exc:
        raise VoxsegError(f"{path}: {_DAMAGED} ({exc})") from exc
    finally:
        log.removeHandler(warnings)
    promised = max((int(v[1]) for v in numbered if len(v) == 2), default=len(pages))
    broken_chain = any("page offset" in m for m in warnings.messages)
    if not in_file or broken_chain or len(pages) != num_slices or promised > len(pages):
        raise VoxsegError(f"{path}: {_DAMAGED} (pages or pixel data missing at the end)")


class _LogCapture(logging.Handler):
    """Collects log messages (tifffile reports a cut page chain only as a warning)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


_DAMAGED = DAMAGED


def _first_line(exc: Exception) -> str:
    """The informative line of an ITK exception (the one after ``ERROR:``)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if "ERROR" in ln and ": " in ln:
            detail = ln.split("): ", 1)[-1] if "): " in ln else ln.split("ERROR: ", 1)[-1]
            if detail:
                return detail
    return lines[-1] if lines else type(exc).__name__
