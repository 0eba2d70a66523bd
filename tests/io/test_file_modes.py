"""Files and folders voxseg writes atomically get the mode a plain ``open()``/``mkdir()``
gives under the same umask (the reference: such a file and folder made beside them), not
the owner-only mode of the temporary file or folder they were written as."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from voxseg.config import write_json
from voxseg.io import Image, write_image
from voxseg.io.formats import write_dicom_series
from voxseg.nets.weights import save_weights


@pytest.fixture(params=[0o022, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_and_folders_have_the_usual_mode(tmp_path, umask):
    (tmp_path / "plain.txt").write_text("x")
    (tmp_path / "plain_dir").mkdir()
    file_mode, dir_mode = _mode(tmp_path / "plain.txt"), _mode(tmp_path / "plain_dir")
    assert file_mode == 0o666 & ~umask  # the reference, as the system makes it

    write_json(tmp_path / "a.json", {"a": 1})
    write_image(Image(np.zeros((3, 4, 5), np.uint8)), tmp_path / "a.nii.gz")
    save_weights(torch.nn.Linear(2, 2), tmp_path / "w.safetensors")
    series = write_dicom_series(Image(np.zeros((2, 4, 4), np.int16)), tmp_path / "series")
    for name in ("a.json", "a.nii.gz", "w.safetensors"):
        assert _mode(tmp_path / name) == file_mode, name
    assert _mode(series if series.is_dir() else tmp_path / "series") == dir_mode
