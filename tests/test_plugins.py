"""Registries are complete from any entry point, and installed plug-ins register through the
``voxseg.plugins`` entry-point group."""

import subprocess
import sys
import textwrap

import pytest
import torch

from voxseg import _registry
from voxseg.losses import LOSSES, build_loss

#: A whole plug-in package: one module whose import registers a loss. Its distribution
#: declares ``[project.entry-points."voxseg.plugins"] l1 = "voxseg_l1_plugin"``.
PLUGIN = '''
"""A voxseg plug-in: the mean absolute error between softmax and one-hot target."""
import torch
from voxseg.losses import register_loss


@register_loss("l1_demo")
class L1Loss(torch.nn.Module):
    def __init__(self, *, num_classes, region_based=False, ignore_label=None):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, logits, target):
        onehot = torch.nn.functional.one_hot(target[:, 0].long(), self.num_classes)
        return (logits.softmax(1) - onehot.movedim(-1, 1)).abs().mean()
'''


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """The plug-in installed as a distribution on ``sys.path`` (as pip would lay it out)."""
    (tmp_path / "voxseg_l1_plugin").mkdir()
    (tmp_path / "voxseg_l1_plugin" / "__init__.py").write_text(PLUGIN)
    info = tmp_path / "voxseg_l1_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: voxseg-l1-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[voxseg.plugins]\nl1 = voxseg_l1_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(_registry, "_plugins_loaded", False)
    yield
    LOSSES._items.pop("l1_demo", None)
    sys.modules.pop("voxseg_l1_plugin", None)


def test_installed_plugin_registers_its_loss(installed_plugin):
    assert "l1_demo" in LOSSES.names()
    loss = build_loss({"name": "l1_demo"}, num_classes=3)
    logits = torch.randn(2, 3, 4, 5, 6, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, 3, (2, 1, 4, 5, 6), generator=torch.Generator().manual_seed(1))
    probs = logits.softmax(1).numpy()
    expected = sum(
        abs(probs[b, c, z, y, x] - float(target[b, 0, z, y, x] == c))
        for b in range(2)
        for c in range(3)
        for z in range(4)
        for y in range(5)
        for x in range(6)
    ) / (2 * 3 * 4 * 5 * 6)
    assert float(loss(logits, target)) == pytest.approx(expected, rel=1e-5)


def test_every_builtin_registers_with_its_registry_alone():
    """In a fresh interpreter, importing only a registry's package registers all its
    built-ins (no import of voxseg.pipelines needed: ``--set loss.name=heatmap`` works)."""
    code = textwrap.dedent(
        """
        import sys
        from voxseg.nets import NETWORKS
        from voxseg.losses import LOSSES
        from voxseg.augment import AUGMENTATIONS
        from voxseg.sampling import SAMPLERS
        from voxseg.postprocess import POSTPROCESSING
        from voxseg.normalization import NORMALIZATIONS
        assert "voxseg.pipelines" not in sys.modules, "a registry imported voxseg.pipelines"
        for registry in (NETWORKS, LOSSES, AUGMENTATIONS, SAMPLERS, POSTPROCESSING,
                         NORMALIZATIONS):
            print(registry.kind, *registry.names())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    names = {line.split()[0]: set(line.split()[1:]) for line in out.splitlines()}
    assert {"unet", "resenc_unet", "segresnet", "swin_unetr"} <= names["networks"]
    assert {"dice_ce", "heatmap", "heatmap_mse"} <= names["losses"]
    assert {"gamma", "previous_mask"} <= names["augmentations"]
    assert {"uniform", "foreground", "roi", "centerline"} <= names["samplers"]
    assert {"fill_holes", "keep_largest_component"} <= names["postprocessing"]
    assert {"ct", "zscore", "nyul"} <= names["normalization"]
