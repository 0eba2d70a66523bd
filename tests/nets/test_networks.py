"""Every registered network: forward, backward, save/load round trip, shape checks."""

from __future__ import annotations

import textwrap

import pytest
import torch
from dynamic_network_architectures.building_blocks.residual import BasicBlockD
from torch import nn

from voxseg.errors import VoxsegError
from voxseg.nets import (
    NETWORKS,
    Topology,
    build_network,
    load_weights,
    network_info,
    save_weights,
)

# Tiny settings for the families whose size is not taken from the topology.
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


def _topology(dims: int) -> Topology:
    return Topology.simple(dims, n_stages=3, base_features=4)


def _patch(name: str, dims: int) -> list[int]:
    divisor = network_info(name).divisor(_topology(dims))
    return [max(d, 16, network_info(name).min_input_size) for d in divisor]


def _build(name: str, dims: int, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return build_network(
        name,
        in_channels=kwargs.pop("in_channels", 1),
        num_classes=kwargs.pop("num_classes", 3),
        topology=_topology(dims),
        patch_size=_patch(name, dims),
        **{**TINY.get(name, {}), **kwargs},
    )


def _cases() -> list:
    out = []
    for name in NETWORKS.names():
        info = network_info(name)
        for dims in (2, 3):
            if (info.supports_2d, info.supports_3d)[dims - 2]:
                heavy = name == "swin_unetr" and dims == 3
                marks = [pytest.mark.slow] if heavy else []
                out.append(pytest.param(name, dims, id=f"{name}-{dims}d", marks=marks))
    return out


@pytest.mark.parametrize(("name", "dims"), _cases())
def test_network_contract(name: str, dims: int, tmp_path) -> None:
    torch.set_num_threads(1)
    model = _build(name, dims)
    patch = _patch(name, dims)
    x = torch.randn(2, 1, *patch, generator=torch.Generator().manual_seed(1))

    model.train()
    y = model(x)
    assert isinstance(y, torch.Tensor)
    assert y.shape == (2, 3, *patch)
    y.square().mean().backward()
    # Unused heads (deep-supervision outputs when it is off) have no gradient.
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) > len(list(model.parameters())) // 2
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)

    model.eval()
    save_weights(model, tmp_path / "w.safetensors")
    other = _build(name, dims, seed=123).eval()
    with torch.no_grad():
        before = other(x)
        load_weights(other, tmp_path / "w.safetensors")
        expected, got = model(x), other(x)
    assert not torch.equal(before, expected)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


@pytest.mark.parametrize(("name", "dims"), [(n, 2) for n in NETWORKS.names()])
def test_odd_input_size_gives_clear_error(name: str, dims: int) -> None:
    model = _build(name, dims).eval()
    patch = _patch(name, dims)
    odd = patch[:-1] + [patch[-1] + 1]
    with pytest.raises(VoxsegError, match=name):
        model(torch.zeros(1, 1, *odd))
    with pytest.raises(VoxsegError, match="expects input"):
        model(torch.zeros(1, 2, *patch))


@pytest.mark.parametrize("name", [n for n in NETWORKS.names() if n != "unetr"])
def test_patch_not_divisible_is_refused_at_build(name: str) -> None:
    topo = _topology(3)
    with pytest.raises(VoxsegError, match="divisible"):
        build_network(name, in_channels=1, num_classes=2, topology=topo, patch_size=[33, 32, 32])


@pytest.mark.parametrize(
    "name", [n for n in NETWORKS.names() if network_info(n).supports_deep_supervision]
)
@pytest.mark.parametrize("dims", [2, 3])
def test_deep_supervision_outputs_highest_resolution_first(name: str, dims: int) -> None:
    topo = Topology(
        spatial_dims=dims,
        features_per_stage=[4, 8, 8],
        kernel_sizes=[[3] * dims] * 3,
        strides=[[1] * dims, [1] + [2] * (dims - 1), [2] * dims],
        n_conv_per_stage=[1, 1, 1],
        n_conv_per_stage_decoder=[1, 1],
    )
    patch = [8] + [16] * (dims - 1)
    model = build_network(
        name, in_channels=1, num_classes=2, topology=topo, patch_size=patch, deep_supervision=True
    )
    out = model(torch.randn(1, 1, *patch))
    assert isinstance(out, list | tuple)
    # Decoder outputs at stages 0 and 1 (the bottleneck has none): full, then stride-1 size.
    assert [tuple(o.shape[2:]) for o in out] == [
        tuple(patch),
        tuple(p // s for p, s in zip(patch, topo.strides[1], strict=True)),
    ]


def test_deep_supervision_refused_where_unsupported() -> None:
    with pytest.raises(VoxsegError, match="deep supervision"):
        _build("segformer3d", 3, deep_supervision=True)


def test_unknown_network_lists_registered_ones() -> None:
    with pytest.raises(VoxsegError, match="resenc_unet_l"):
        build_network(
            "nope", in_channels=1, num_classes=2, topology=_topology(3), patch_size=[8] * 3
        )


def test_family_settings_are_checked_against_what_the_builder_forwards_to() -> None:
    """A family registered with the shared builder declares its own settings and those of
    the class it forwards them to; anything else is refused by name, and the request
    (positional only) is not a setting."""
    from voxseg._registry import declared_kwargs

    for name, own in (("unet", "conv_bias"), ("swin_unetr", "feature_size")):
        names, open_ended = declared_kwargs(NETWORKS.get(name))
        assert own in names and "net" not in names and not open_ended
    with pytest.raises(VoxsegError, match=r"takes no keyword argument\(s\) \['widht'\]"):
        _build("unet", 3, widht=8)

    def biased(model: nn.Module) -> int:
        return sum(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv3d))

    # a setting of PlainConvUNet reaches it: only the segmentation heads keep their bias
    assert biased(_build("unet", 3, conv_bias=False)) < biased(_build("unet", 3))


def test_unet_uses_nnunet_defaults() -> None:
    model = _build("unet", 3)
    norms = [m for m in model.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert norms and all(n.affine and n.eps == 1e-5 for n in norms)
    acts = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert acts and all(a.inplace for a in acts)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    assert all(c.bias is not None for c in convs)


@pytest.mark.parametrize("preset", ["resenc_unet_m", "resenc_unet_l", "resenc_unet_xl"])
def test_resenc_presets_follow_nnunet(preset: str) -> None:
    topo = Topology.simple(3, n_stages=5, base_features=2, max_features=8)
    model = build_network(preset, in_channels=1, num_classes=2, topology=topo, patch_size=[16] * 3)
    blocks = [sum(isinstance(m, BasicBlockD) for m in s.modules()) for s in model.encoder.stages]
    assert blocks == [1, 3, 4, 6, 6]  # nnUNetPlannerResEnc{M,L,XL}: (1, 3, 4, 6, 6, 6, ...)
    decoder_convs = [
        sum(isinstance(m, nn.Conv3d) for m in s.modules()) for s in model.decoder.stages
    ]
    assert decoder_convs == [1, 1, 1, 1]


def test_segresnet_refuses_anisotropic_topology() -> None:
    topo = Topology(
        spatial_dims=3,
        features_per_stage=[8, 16],
        kernel_sizes=[[3, 3, 3]] * 2,
        strides=[[1, 1, 1], [1, 2, 2]],
        n_conv_per_stage=[1, 1],
        n_conv_per_stage_decoder=[1],
    )
    with pytest.raises(VoxsegError, match="anisotropic"):
        build_network("segresnet", in_channels=1, num_classes=2, topology=topo, patch_size=[8] * 3)


def test_unetr_takes_exactly_the_patch_size() -> None:
    model = _build("unetr", 2).eval()
    with pytest.raises(VoxsegError, match="exactly the patch size"):
        model(torch.zeros(1, 1, 32, 32))


def test_user_network_by_dotted_path(tmp_path, monkeypatch) -> None:
    pkg = tmp_path / "mypkg_nets_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            from voxseg.nets import NetworkInfo

            class MyNet(nn.Module):
                info = NetworkInfo(supports_2d=False)

                def __init__(self, *, in_channels, num_classes, topology, patch_size,
                             deep_supervision=False, width=4):
                    super().__init__()
                    conv = nn.Conv3d if topology.spatial_dims == 3 else nn.Conv2d
                    self.body = nn.Sequential(
                        conv(in_channels, width, 3, padding=1), nn.ReLU(),
                        conv(width, num_classes, 1),
                    )
                    self.patch_size = patch_size

                def forward(self, x):
                    return self.body(x)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("VOXSEG_TRUST_CODE", "1")  # a module:attr name runs the user's code
    model = build_network(
        "mypkg_nets_test.nets:MyNet",
        in_channels=2,
        num_classes=3,
        topology=_topology(3),
        patch_size=[5, 6, 7],
        width=2,
    )
    assert model.patch_size == [5, 6, 7]
    assert model.body[0].out_channels == 2
    assert model(torch.zeros(1, 2, 5, 6, 7)).shape == (1, 3, 5, 6, 7)
    with pytest.raises(VoxsegError, match="does not support 2D"):
        build_network(
            "mypkg_nets_test.nets:MyNet",
            in_channels=2,
            num_classes=3,
            topology=_topology(2),
            patch_size=[8, 8],
        )


def test_minimum_input_size_is_refused_clearly() -> None:
    with pytest.raises(VoxsegError, match="minimum 64"):
        build_network(
            "swin_unetr", in_channels=1, num_classes=2, topology=_topology(3), patch_size=[32] * 3
        )


@pytest.mark.parametrize(("name", "dims"), _cases())
def test_network_trains_channels_last(name: str, dims: int) -> None:
    """The CPU trainer's default layout (channels-last network and batch) gives the
    default layout's outputs and gradients, for every registered network."""
    torch.set_num_threads(1)
    fmt = torch.channels_last_3d if dims == 3 else torch.channels_last
    plain = _build(name, dims).train()
    last = _build(name, dims).train().to(memory_format=fmt)
    x = torch.randn(2, 1, *_patch(name, dims), generator=torch.Generator().manual_seed(1))
    y_plain, y_last = plain(x), last(x.contiguous(memory_format=fmt))
    torch.testing.assert_close(y_last, y_plain, rtol=1e-4, atol=1e-5)
    y_plain.square().mean().backward()
    y_last.square().mean().backward()
    for (key, p), q in zip(plain.named_parameters(), last.parameters(), strict=True):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=key)
