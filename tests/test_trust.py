"""A model folder is data: a malicious one (a ``module:attr`` network that writes a file,
undeclared keyword arguments, a post-processing step by dotted path, a pickle payload in a
``.pth``, an nnU-Net plans naming a function) runs nothing unless the user trusts it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from voxseg._registry import TRUST_CODE_ENV, Registry, check_kwargs
from voxseg.errors import VoxsegError

PAYLOAD = """
from pathlib import Path
Path({marker!r}).with_suffix(".imported").write_text("module imported")

def build(**kwargs):
    Path({marker!r}).with_suffix(".called").write_text("factory called")
    raise SystemExit(0)
"""


def _voxseg(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "voxseg.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.fixture
def evil(tmp_path: Path, tiny_model: Path):
    """``(model folder copy, payload dir, marker path, env)``."""
    payload_dir = tmp_path / "site"
    payload_dir.mkdir()
    marker = tmp_path / "pwned"
    (payload_dir / "evil_payload_mod.py").write_text(PAYLOAD.format(marker=str(marker)))
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    env = {k: v for k, v in os.environ.items() if k != TRUST_CODE_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(payload_dir), env.get("PYTHONPATH", "")])
    return model, payload_dir, marker, env


def _edit_config(model: Path, **network) -> None:
    cfg = json.loads((model / "config.json").read_text())
    cfg["network"].update(network)
    (model / "config.json").write_text(json.dumps(cfg))


def _one_input(tiny_model: Path, tmp_path: Path) -> Path:
    home = tiny_model.parents[3]
    src = sorted((home / "raw" / "Dataset001_Organs" / "imagesTs").iterdir())[0]
    images = tmp_path / "in"
    images.mkdir(exist_ok=True)
    shutil.copy(src, images / src.name)
    return images


def test_module_attr_network_in_a_model_folder_runs_nothing(evil, tiny_model, tmp_path):
    model, _, marker, env = evil
    _edit_config(model, name="evil_payload_mod:build")
    images = _one_input(tiny_model, tmp_path)
    args = ["predict", "-i", str(images), "-o", str(tmp_path / "out"), "-m", str(model)]
    args += ["--device", "cpu", "--no-tta"]
    run = _voxseg(*args, env=env)
    assert run.returncode == 1, run.stderr
    assert "evil_payload_mod:build" in run.stdout + run.stderr
    assert "--trust-code" in run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert not marker.with_suffix(".imported").exists()
    assert not marker.with_suffix(".called").exists()
    # the payload is real: with --trust-code the same folder imports and calls it
    trusted = _voxseg("--trust-code", *args, env=env)
    assert marker.with_suffix(".imported").exists(), trusted.stderr
    assert marker.with_suffix(".called").exists()


def test_undeclared_network_kwargs_are_refused(evil, tiny_model, tmp_path):
    model, _, _, env = evil
    _edit_config(model, kwargs={"not_a_parameter": 3})
    images = _one_input(tiny_model, tmp_path)
    args = ["predict", "-i", str(images), "-o", str(tmp_path / "out"), "-m", str(model)]
    run = _voxseg(*args, "--device", "cpu", "--no-tta", env=env)
    assert run.returncode == 1
    text = run.stdout + run.stderr
    assert "not_a_parameter" in text and "Traceback" not in text


def test_postprocessing_step_by_dotted_path_is_refused(evil, tiny_model, tmp_path):
    model, _, marker, env = evil
    steps = {"steps": [{"name": "evil_payload_mod:build"}]}
    (model / "postprocessing.json").write_text(json.dumps(steps))
    images = _one_input(tiny_model, tmp_path)
    args = ["predict", "-i", str(images), "-o", str(tmp_path / "out"), "-m", str(model)]
    run = _voxseg(*args, "--device", "cpu", "--no-tta", env=env)
    assert run.returncode == 1
    assert "evil_payload_mod:build" in run.stdout + run.stderr
    assert not marker.with_suffix(".imported").exists()


class _Payload:
    """Unpickling this calls ``Path.write_text`` (a stand-in for any code)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "unpickled"))


def test_pickle_payload_in_a_checkpoint_runs_nothing(tmp_path):
    from voxseg.inference.nnunet import load_nnunet_checkpoint
    from voxseg.nets import read_weights

    marker = tmp_path / "unpickled.txt"
    pth = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {}, "payload": _Payload(marker)}, pth)
    # the file really is a payload: plain unpickling writes the marker
    with pytest.raises(VoxsegError, match="weights-only"):
        load_nnunet_checkpoint(pth)
    assert not marker.exists()
    with pytest.raises(VoxsegError, match="safetensors"):
        read_weights(pth)
    assert not marker.exists()
    torch.load(pth, weights_only=False)
    assert marker.read_text() == "unpickled"


def test_nnunet_plans_may_name_only_network_classes(monkeypatch):
    from voxseg.inference.nnunet import locate

    monkeypatch.delenv(TRUST_CODE_ENV, raising=False)
    for bad in (
        "os.system",
        "torch.nn.functional.torch.load",  # a function reached through a trusted module
        "dynamic_network_architectures.architectures.unet.torch.save",
        "torch.nn.Linear",  # a class, but no network module
    ):
        with pytest.raises(VoxsegError, match="trust"):
            locate(bad, network=True)
    with pytest.raises(VoxsegError, match="trust"):
        locate("torch.nn.functional.torch.load")
    ok = locate("dynamic_network_architectures.architectures.unet.PlainConvUNet", network=True)
    assert ok.__name__ == "PlainConvUNet"
    assert locate("torch.nn.modules.conv.Conv3d") is torch.nn.Conv3d
    monkeypatch.setenv(TRUST_CODE_ENV, "1")
    assert locate("torch.nn.functional.torch.load") is torch.load


def test_registry_trust_rule(monkeypatch, tmp_path):
    monkeypatch.delenv(TRUST_CODE_ENV, raising=False)
    reg: Registry = Registry("widgets")

    @reg.register("closed")
    def closed(*, size: int = 1):
        return size

    @reg.register("open")
    def open_(*, size: int = 1, **kwargs):
        return size, kwargs

    assert reg.build("closed", size=3) == 3
    with pytest.raises(VoxsegError, match="takes no keyword argument"):
        reg.build("closed", colour="red")
    with pytest.raises(VoxsegError, match=r"'open'.*\['colour'\].*--trust-code"):
        reg.build("open", colour="red")
    with pytest.raises(VoxsegError, match=r"'json:loads'.*--trust-code"):
        reg.get("json:loads")
    monkeypatch.setenv(TRUST_CODE_ENV, "1")
    assert reg.build("open", colour="red") == (1, {"colour": "red"})
    assert reg.get("json:loads") is json.loads
    # a factory that forwards **kwargs to a declared target accepts the target's names
    open_.forwards_kwargs_to = (textwrap.indent,)
    monkeypatch.delenv(TRUST_CODE_ENV)
    check_kwargs(open_, {"prefix": "> "}, "widget 'open'")
    with pytest.raises(VoxsegError, match="takes no keyword"):
        check_kwargs(open_, {"colour": "red"}, "widget 'open'")
