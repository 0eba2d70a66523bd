"""Weight files and fine-tuning adaptation (new number of classes / input channels)."""

from __future__ import annotations

import pytest
import torch

from voxseg.errors import VoxsegError
from voxseg.nets import (
    NETWORKS,
    Topology,
    adapt_state_dict,
    build_network,
    load_pretrained,
    load_weights,
    network_info,
    read_weights,
    save_weights,
)
from voxseg.nets.weights import AdaptReport

TINY = {
    "swin_unetr": {"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)},
    "unetr": {"feature_size": 4, "hidden_size": 16, "mlp_dim": 16, "num_heads": 2},
    "segformer3d": {
        "embed_dims": (8, 16, 24, 32),
        "num_heads": (1, 1, 1, 1),
        "depths": (1, 1, 1, 1),
        "decoder_dim": 16,
    },
}


def _net(name: str, in_channels: int, num_classes: int, seed: int, dims: int = 2):
    torch.manual_seed(seed)
    topo = Topology.simple(dims, n_stages=3, base_features=4)
    info = network_info(name)
    patch = [max(d, 16, info.min_input_size) for d in info.divisor(topo)]
    model = build_network(
        name,
        in_channels=in_channels,
        num_classes=num_classes,
        topology=topo,
        patch_size=patch,
        **TINY.get(name, {}),
    )
    return model.eval(), patch


@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_weights_load_into_a_default_layout_network(dims: int, tmp_path) -> None:
    """A network trained channels-last (the CPU default) saves weights that a network in
    the default layout loads and answers with identically."""
    trained, patch = _net("unet", 1, 3, seed=0, dims=dims)
    fmt = torch.channels_last_3d if dims == 3 else torch.channels_last
    trained = trained.to(memory_format=fmt)
    assert not all(p.is_contiguous() for p in trained.parameters())
    save_weights(trained, tmp_path / "w.safetensors")
    fresh, _ = _net("unet", 1, 3, seed=1, dims=dims)
    load_weights(fresh, tmp_path / "w.safetensors")
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    x = torch.randn(1, 1, *patch, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), trained(x.contiguous(memory_format=fmt)))


@pytest.mark.parametrize("name", NETWORKS.names())
def test_new_input_channels_keep_the_response_to_repeated_channels(name: str, tmp_path) -> None:
    """An input whose new channels all equal the old one gives the pretrained output."""
    torch.set_num_threads(1)
    old, patch = _net(name, 1, 3, seed=0)
    save_weights(old, tmp_path / "w.safetensors")
    new, _ = _net(name, 2, 3, seed=1)
    report = load_pretrained(new, tmp_path / "w.safetensors")
    assert report.adapted_channels and not report.reinitialised and not report.missing
    x = torch.randn(1, 1, *patch, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(
            new(x.repeat(1, 2, *[1] * len(patch))), old(x), atol=1e-4, rtol=1e-4
        )


@pytest.mark.parametrize("name", NETWORKS.names())
def test_new_number_of_classes_reinitialises_only_the_head(name: str) -> None:
    old, _ = _net(name, 1, 3, seed=0)
    new, _ = _net(name, 1, 2, seed=1)
    fresh = {k: v.clone() for k, v in new.state_dict().items()}
    state, report = adapt_state_dict(old.state_dict(), new)
    new.load_state_dict(state)
    assert report.reinitialised and not report.adapted_channels
    for key, value in new.state_dict().items():
        expected = fresh[key] if key in report.reinitialised else old.state_dict()[key]
        assert torch.equal(value, expected), key
    # Only output layers change shape: each re-initialised tensor has 2 (new classes) rows.
    assert all(state[k].shape[0] == 2 for k in report.reinitialised)


def test_unet_head_report_names_the_segmentation_layers() -> None:
    old, _ = _net("unet", 1, 4, seed=0)
    new, _ = _net("unet", 1, 2, seed=0)
    _, report = adapt_state_dict(old.state_dict(), new)
    assert report.reinitialised
    assert all("seg_layers" in k for k in report.reinitialised)
    assert "re-initialised" in str(report)


def test_unrelated_weights_are_refused() -> None:
    unet, _ = _net("unet", 1, 2, seed=0)
    segformer, _ = _net("segformer3d", 1, 2, seed=0)
    with pytest.raises(VoxsegError, match="architecture"):
        adapt_state_dict(segformer.state_dict(), unet)


def test_load_weights_names_the_file_on_mismatch(tmp_path) -> None:
    old, _ = _net("unet", 1, 3, seed=0)
    new, _ = _net("unet", 1, 2, seed=0)
    path = tmp_path / "w.safetensors"
    save_weights(old, path)
    with pytest.raises(VoxsegError, match="(?s)w.safetensors.*load_pretrained"):
        load_weights(new, path)


def test_read_weights_errors(tmp_path) -> None:
    with pytest.raises(VoxsegError, match="not found"):
        read_weights(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(VoxsegError, match="bad.safetensors"):
        read_weights(bad)


def test_shared_tensors_are_stored_once_and_restored(tmp_path) -> None:
    """dynamic-network-architectures keeps the encoder under two names (decoder.encoder)."""
    model, _ = _net("unet", 1, 2, seed=0)
    path = tmp_path / "w.safetensors"
    save_weights(model, path)
    stored = read_weights(path)
    assert len(stored) < len(model.state_dict())
    other, _ = _net("unet", 1, 2, seed=5)
    load_weights(other, path)
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key


def test_report_lists_every_kind_of_change() -> None:
    report = AdaptReport(loaded=["a"], missing=["b"], unused=["c"])
    text = str(report)
    assert "loaded 1" in text and "b" in text and "c" in text


def test_the_same_weights_make_the_same_file(tmp_path) -> None:
    """Equal weights give equal bytes, so a file's hash identifies its weights (safetensors
    writes several metadata keys in a random order per write)."""
    import hashlib

    from safetensors import safe_open

    model, _ = _net("unet", 1, 3, seed=0)
    digests = set()
    for i in range(12):
        save_weights(model, tmp_path / f"w{i}.safetensors")
        digests.add(hashlib.sha256((tmp_path / f"w{i}.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1
    with safe_open(str(tmp_path / "w0.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}  # what torch-side readers (transformers) check
