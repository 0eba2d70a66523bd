"""Trainer output cadences are settings of the model config (``logging``)."""

from voxseg.config import apply_overrides
from voxseg.training import ModelConfig, train_fold


def test_snapshot_every_n_epochs(tiny_home):
    cfg = apply_overrides(
        ModelConfig(dataset="Organs"),
        [
            "training.epochs=3",
            "training.iterations_per_epoch=1",
            "training.val_iterations=1",
            "training.batch_size=2",
            "training.num_workers=0",
            "training.device=cpu",
            "logging.snapshot_every=2",
            "logging.plot_seconds=3600",
        ],
    )
    folder = train_fold(cfg, "all")
    snapshots = sorted(p.name for p in (folder / "snapshots").iterdir())
    assert snapshots == ["epoch_0000.png", "epoch_0002.png"]
    assert (folder / "progress.png").is_file()  # drawn after the last epoch whatever the interval
