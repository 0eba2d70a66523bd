"""The model-folder layout and its loaders: one place names the files, the first matching
loader opens a folder, and a new kind of folder is one registration."""

import json

import pytest

from voxseg import modelfolder
from voxseg.errors import VoxsegError
from voxseg.inference import ModelFolder
from voxseg.modelfolder import ModelLayout, find_loader, register_loader


def test_layout_names_every_file(tmp_path):
    layout = ModelLayout(tmp_path)
    assert layout.config == tmp_path / "config.json"
    assert layout.weights(3) == tmp_path / "fold_3" / "weights.safetensors"
    assert layout.weights("all", "best") == tmp_path / "fold_all" / "checkpoint_best.safetensors"
    assert layout.validation_dir(0) == tmp_path / "fold_0" / "validation"
    assert layout.stage_dir("lesion") == tmp_path / "stages" / "lesion"
    with pytest.raises(VoxsegError, match="final, best, last"):
        layout.weights(0, "newest")


def test_fold_selection(tmp_path):
    layout = ModelLayout(tmp_path)
    for fold in ("10", "2", "all", "0"):
        layout.weights(fold).parent.mkdir(parents=True)
        layout.weights(fold).touch()
    (tmp_path / "fold_5").mkdir()  # not trained: no weights
    assert layout.folds_with("weights.safetensors") == ["0", "2", "10", "all"]
    assert layout.select_folds(None, "weights.safetensors") == ["0", "2", "10", "all"]
    assert layout.select_folds([2, "0"], "weights.safetensors") == ["2", "0"]
    with pytest.raises(VoxsegError, match=r"fold\(s\) 5; trained folds: 0, 2, 10, all"):
        layout.select_folds(["5"], "weights.safetensors")


def _nnunet_folder(root):
    (root / "fold_0").mkdir(parents=True)
    (root / "plans.json").write_text("{}")
    (root / "dataset.json").write_text("{}")
    (root / "fold_0" / "checkpoint_final.pth").touch()
    return root


def test_the_first_matching_loader_opens_a_folder(tiny_model, tmp_path):
    assert find_loader(tiny_model).name == "voxseg"
    assert find_loader(tiny_model / "fold_all").name == "voxseg"
    nnunet = _nnunet_folder(tmp_path / "nnunet")
    assert find_loader(nnunet).name == "nnunet"
    assert find_loader(nnunet / "fold_0").name == "nnunet"
    pipeline = tmp_path / "pipe"
    pipeline.mkdir()
    stage = {"name": "organ", "labels": {"organ": [1]}, "output": {"organ": 1}}
    spec = {"name": "p", "channel_names": {"0": "CT"}, "labels": {"organ": 1}, "stages": [stage]}
    (pipeline / "pipeline.json").write_text(json.dumps(spec))
    assert find_loader(pipeline).name == "pipeline"
    with pytest.raises(VoxsegError, match="voxseg pipeline predict"):
        ModelFolder.load(pipeline)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VoxsegError, match="tried: nnunet, pipeline, voxseg"):
        find_loader(tmp_path / "empty")
    model = ModelFolder.load(tiny_model / "fold_all")
    assert model.folder == tiny_model and model.folds == ["all"]


def test_a_new_kind_of_folder_is_one_registration(tiny_model, tmp_path, monkeypatch):
    """A folder that points at a trained model (a stand-in for any new kind) is opened by
    its own loader, tried before the voxseg loader."""
    monkeypatch.setattr(modelfolder, "LOADERS", list(modelfolder.LOADERS))
    link = tmp_path / "link"
    link.mkdir()
    (link / "target.txt").write_text(str(tiny_model))

    def open_link(path, **options):
        return ModelFolder.load((path / "target.txt").read_text(), **options)

    register_loader("link", lambda p: (p / "target.txt").is_file(), open_link, before="voxseg")
    assert [lo.name for lo in modelfolder.LOADERS] == ["nnunet", "pipeline", "link", "voxseg"]
    model = ModelFolder.load(link, folds=["all"])
    assert model.folder == tiny_model and model.folds == ["all"]
    with pytest.raises(ValueError, match="twice"):
        register_loader("link", lambda p: False, open_link)


def test_checkpoint_networks_load_as_the_trainer_reads_them(tiny_model):
    """A training checkpoint's network, loaded for prediction, equals what the trainer's own
    checkpoint reader restores."""
    import torch

    from voxseg.training.checkpoint import load_checkpoint

    checkpoint = "last"
    model = ModelFolder.load(tiny_model, checkpoint=checkpoint)
    (net,) = model.load_networks(torch.device("cpu"))
    reference = model.build_network()
    load_checkpoint(
        ModelLayout(tiny_model).weights("all", checkpoint), reference, restore_rng=False
    )
    ours, theirs = net.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)
