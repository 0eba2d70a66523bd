import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from voxseg.errors import VoxsegError
from voxseg.training import ModelConfig, train_fold
from voxseg.training import trainer as trainer_module
from voxseg.training.averaging import WeightAverage
from voxseg.training.schedules import learning_rate

FAST = [
    "training.iterations_per_epoch=3",
    "training.val_iterations=1",
    "training.batch_size=2",
    "training.num_workers=0",
    "training.device=cpu",
    "prediction.tta=false",
    "logging.snapshots=true",
]


def _config(*overrides: str, epochs: int = 2) -> ModelConfig:
    from voxseg.config import apply_overrides

    cfg = ModelConfig(dataset="Organs")
    return apply_overrides(cfg, [*FAST, f"training.epochs={epochs}", *overrides])


def _weights(folder):
    return load_file(folder / "weights.safetensors")


def test_model_folder_is_self_describing(tiny_home):
    folder = train_fold(_config(), 0)
    for name in (
        "config.json",
        "plans.json",
        "dataset.json",
        "weights.safetensors",
        "checkpoint_last.safetensors",
        "training_log.csv",
        "progress.png",
    ):
        assert (folder / name).is_file(), name
    assert (folder.parent / "config.json").is_file()
    assert sorted(p.name for p in (folder / "snapshots").iterdir()) == [
        "epoch_0000.png",
        "epoch_0001.png",
    ]
    log = (folder / "training_log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,lr,train_loss,val_loss,val_dice")
    assert len(log) == 3
    summary = json.loads((folder / "validation" / "summary.json").read_text())
    assert summary["num_cases"] >= 1 and "liver" in summary["mean"]
    config = json.loads((folder / "config.json").read_text())
    assert config["training"]["epochs"] == 2 and config["optimizer"]["lr"] == 0.01


def test_resume_continues_exactly(tiny_home):
    straight = train_fold(_config("model_name=a", epochs=2), "all")
    w_straight = _weights(straight)
    interrupted = _config("model_name=b", epochs=1)
    train_fold(interrupted, "all")
    resumed = train_fold(_config("model_name=b", epochs=2), "all", resume=True, force=True)
    w_resumed = _weights(resumed)
    for k in w_straight:
        torch.testing.assert_close(w_resumed[k], w_straight[k], rtol=0, atol=0)


def test_channels_last_training_matches_the_default_layout(tiny_home):
    """The CPU default (channels-last network and batches) changes only the memory layout:
    the same seed gives the same weights as the default layout up to float rounding."""
    from voxseg.training.setup import TrainingSetup
    from voxseg.training.trainer import Trainer

    cfg = _config("model_name=cl", "training.channels_last=auto", epochs=1)
    trainer = Trainer(TrainingSetup.create(cfg, "all"))
    assert trainer.memory_format == torch.channels_last_3d
    assert any(not p.is_contiguous() for p in trainer.network.parameters())
    w_cl = _weights(trainer.fit())
    plain = train_fold(_config("model_name=plain", "training.channels_last=false", epochs=1), "all")
    w_plain = _weights(plain)
    assert w_cl.keys() == w_plain.keys()
    for k in w_plain:
        torch.testing.assert_close(w_cl[k], w_plain[k], rtol=1e-3, atol=1e-4)


def test_validation_patches_are_read_once_and_match_reading_them_each_epoch(tiny_home, monkeypatch):
    """The fixed validation batches are read in the first epoch and kept; later epochs
    score the same patches as reading them again (the path taken when they do not fit)."""
    from voxseg.training import trainer as trainer_module
    from voxseg.training.setup import TrainingSetup

    reads = []
    original = trainer_module.Trainer._loader

    def counting(self, case_ids, **kw):
        reads.append(kw["stop"])
        return original(self, case_ids, **kw)

    monkeypatch.setattr(trainer_module.Trainer, "_loader", counting)
    cfg = _config("model_name=cache", "training.val_iterations=3", epochs=1)
    trainer = trainer_module.Trainer(TrainingSetup.create(cfg, 0))
    first = trainer._validate(0)
    second = trainer._validate(1)
    assert reads == [3] and len(trainer._val_cache) == 3
    monkeypatch.setattr(trainer_module, "VALIDATION_CACHE_BYTES", 0)
    trainer._val_cache = None
    reread = [trainer._validate(e) for e in (2, 3)]
    assert reads == [3, 3, 3] and trainer._val_cache is None
    assert first == second == reread[0] == reread[1]
    assert len(first.dice_per_class) == 3


def test_resume_refuses_a_changed_config(tiny_home):
    train_fold(_config(epochs=1), "all")
    with pytest.raises(VoxsegError, match="config differs"):
        train_fold(_config("optimizer.lr=0.5", epochs=2), "all", resume=True)
    with pytest.raises(VoxsegError, match="--resume"):
        train_fold(_config(epochs=1), "all")


def test_paste_trains_and_a_channel_the_input_lacks_is_refused_before_training(tiny_home):
    folder = train_fold(
        _config('sampling.paste={"classes": [1, 2], "host_label": 0}', epochs=1), "all"
    )
    assert json.loads((folder / "config.json").read_text())["sampling"]["paste"]["classes"] == [
        1,
        2,
    ]
    with pytest.raises(VoxsegError, match="dataset.json: sampling.paste names channel 3"):
        train_fold(_config('sampling.paste={"classes": [1], "host_channel": 3}'), "all", force=True)


def test_early_stopping_stops_when_the_ema_stalls(tiny_home):
    cfg = _config(
        "early_stopping.enabled=true",
        "early_stopping.patience=1",
        "early_stopping.min_delta=1.0",
        epochs=6,
    )
    folder = train_fold(cfg, 0)
    rows = (folder / "training_log.csv").read_text().splitlines()[1:]
    assert len(rows) == 2  # epoch 0 sets the best, epoch 1 cannot beat it by 1.0


def test_fine_tuning_starts_from_the_pretrained_weights(tiny_home):
    base = train_fold(_config("model_name=base", epochs=1), "all")
    tuned = train_fold(
        _config("model_name=tuned", "optimizer.lr=1e-12", epochs=1),
        "all",
        pretrained=base.parent,
    )
    a, b = _weights(base), _weights(tuned)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    ("name", "epoch", "expected"),
    [("poly", 0, 0.01), ("poly", 5, 0.01 * 0.5**0.9), ("constant", 7, 0.01)],
)
def test_learning_rate_schedules(name, epoch, expected):
    from voxseg.training import OptimizerConfig, ScheduleConfig

    lr = learning_rate(epoch, 10, OptimizerConfig(), ScheduleConfig(name=name))
    assert lr == pytest.approx(expected)


def test_warmup_cosine():
    from voxseg.training import OptimizerConfig, ScheduleConfig

    s = ScheduleConfig(name="warmup_cosine", warmup_epochs=2, min_lr=0.0)
    lrs = [learning_rate(e, 10, OptimizerConfig(lr=1.0), s) for e in range(10)]
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))
    assert lrs[-1] == pytest.approx(0.5 * (1 + np.cos(np.pi * 7 / 8)))


def test_short_run_peak_learning_rate():
    """A schedule with ``short_run_iterations`` R peaks at lr·R/N for a run of N < R
    iterations (at most ``short_run_max_factor``×), at lr from R on, and at lr while N is
    unknown; warm-up and cosine are laid over the raised peak."""
    from voxseg.training import OptimizerConfig, ScheduleConfig
    from voxseg.training.schedules import peak_learning_rate

    opt = OptimizerConfig(name="adamw", lr=1e-3)
    s = ScheduleConfig(name="warmup_cosine", warmup_epochs=2, short_run_iterations=2000)
    assert peak_learning_rate(opt, s, 1000) == pytest.approx(2e-3)
    assert peak_learning_rate(opt, s, 500) == pytest.approx(3e-3)  # capped at 3x
    assert peak_learning_rate(opt, s, 2000) == pytest.approx(1e-3)
    assert peak_learning_rate(opt, s, 250_000) == pytest.approx(1e-3)
    assert peak_learning_rate(opt, s, None) == pytest.approx(1e-3)
    off = ScheduleConfig(name="warmup_cosine", warmup_epochs=2)
    assert peak_learning_rate(opt, off, 100) == pytest.approx(1e-3)
    # 50 epochs x 20 iterations = 1000: peak 2e-3 at the end of the warm-up, halfway down
    # the cosine half-way through the remaining 48 epochs
    assert learning_rate(0, 50, opt, s, 20) == pytest.approx(2e-3 / 3)
    assert learning_rate(2, 50, opt, s, 20) == pytest.approx(2e-3)
    assert learning_rate(26, 50, opt, s, 20) == pytest.approx(1e-3)
    assert learning_rate(2, 50, opt, s, None) == pytest.approx(1e-3)
    # the adamw recipe: the demo's 51 x 19 iterations peak at 3e-3 (capped), 4000 at 1e-3
    from voxseg.training.recipes import RECIPES

    adamw_opt, adamw_sched = RECIPES["adamw"]
    assert learning_rate(2, 51, adamw_opt, adamw_sched, 19) == pytest.approx(3e-3)
    assert learning_rate(2, 50, adamw_opt, adamw_sched, 30) == pytest.approx(2e-3)
    assert learning_rate(2, 40, adamw_opt, adamw_sched, 100) == pytest.approx(1e-3)
    nnunet_opt, nnunet_sched = RECIPES["nnunet"]
    assert learning_rate(0, 51, nnunet_opt, nnunet_sched, 19) == pytest.approx(1e-2)


def test_recipes_set_the_optimiser_and_schedule_and_set_overrides_win(tiny_home):
    """``voxseg train --recipe adamw`` trains with AdamW and the warm-up cosine schedule;
    a ``--set`` after it still changes single values; ``nnunet`` restores SGD + poly."""
    from typer.testing import CliRunner

    from voxseg.cli import app
    from voxseg.training import apply_recipe
    from voxseg.training.setup import TrainingSetup
    from voxseg.training.trainer import Trainer

    sets = [x for s in FAST for x in ("--set", s)]
    result = CliRunner().invoke(
        app,
        [
            "train",
            "Organs",
            "--fold",
            "all",
            "--epochs",
            "3",
            "--recipe",
            "adamw",
            *sets,
            "--set",
            "optimizer.lr=0.003",
            "--set",
            "logging.snapshots=false",
        ],
    )
    assert result.exit_code == 0, result.output
    folder = tiny_home / "models" / "Dataset001_Organs" / "default" / "3d_fullres" / "fold_all"
    config = json.loads((folder / "config.json").read_text())
    assert config["optimizer"]["name"] == "adamw"
    assert config["optimizer"]["lr"] == 0.003 and config["optimizer"]["weight_decay"] == 1e-4
    assert config["schedule"] == {**config["schedule"], "name": "warmup_cosine", "warmup_epochs": 2}
    # two warm-up epochs at peak·1/3 and peak·2/3, then the cosine's start at the peak; the
    # run's 3 x 3 iterations are far below the recipe's short-run length: peak = 3·lr
    assert config["schedule"]["short_run_iterations"] == 3000
    lrs = [
        float(row.split(",")[1]) for row in (folder / "training_log.csv").read_text().split()[1:]
    ]
    assert lrs == pytest.approx([0.003, 0.006, 0.009])
    trainer = Trainer(
        TrainingSetup.create(ModelConfig.model_validate({**config, "model_name": "o"}), "all"),
    )
    assert type(trainer.optimizer) is torch.optim.AdamW

    back = apply_recipe(ModelConfig.model_validate(config), "nnunet")
    assert back.optimizer == ModelConfig(dataset="Organs").optimizer
    assert back.schedule.name == "poly" and back.training.epochs == 3
    with pytest.raises(VoxsegError, match="unknown training recipe 'adam'.*nnunet, adamw"):
        apply_recipe(back, "adam")


# ---------------------------------------------------------------- weight averaging


def _record_epochs(monkeypatch) -> list[dict[str, np.ndarray]]:
    """The network's floating-point weights at each epoch's checkpoint, in order."""
    seen: list[dict[str, np.ndarray]] = []
    real = trainer_module.save_checkpoint

    def spy(path, model, optimizer, state, average=None):
        if path.name == trainer_module.CHECKPOINT_LAST:
            seen.append(
                {
                    k: v.detach().float().contiguous().numpy().copy()
                    for k, v in model.state_dict().items()
                    if v.is_floating_point()
                }
            )
        return real(path, model, optimizer, state, average=average)

    monkeypatch.setattr(trainer_module, "save_checkpoint", spy)
    return seen


def test_exported_weights_are_the_mean_of_the_last_epochs(tiny_home, monkeypatch):
    seen = _record_epochs(monkeypatch)
    folder = train_fold(_config("model_name=avg", "training.average_last=0.5", epochs=4), "all")
    exported = load_file(folder / "weights.safetensors")
    assert len(seen) == 4
    assert set(exported) <= set(seen[2])
    for name, value in exported.items():
        expected = (seen[2][name].astype(np.float64) + seen[3][name]) / 2
        np.testing.assert_allclose(value.numpy(), expected, rtol=1e-5, atol=1e-6)
    # and differs from the last epoch's weights (the average is really exported)
    assert any(not np.allclose(v.numpy(), seen[3][k]) for k, v in exported.items())


def test_no_averaging_exports_the_last_weights(tiny_home, monkeypatch):
    seen = _record_epochs(monkeypatch)
    folder = train_fold(_config("model_name=last", epochs=2), "all")
    exported = load_file(folder / "weights.safetensors")
    assert set(exported) <= set(seen[-1])
    for name, value in exported.items():
        np.testing.assert_array_equal(value.numpy(), seen[-1][name])


def test_a_resumed_run_averages_as_if_it_had_not_stopped(tiny_home, monkeypatch):
    straight = train_fold(_config("model_name=a", "training.average_last=0.5", epochs=4), "all")
    # stop the second run after three epochs (one of them averaged), then resume it
    stop_after = {"epochs": 3}
    real = trainer_module.Trainer._should_stop

    def should_stop(self):
        return self.state.epoch >= stop_after["epochs"] or real(self)

    monkeypatch.setattr(trainer_module.Trainer, "_should_stop", should_stop)
    cfg = _config("model_name=b", "training.average_last=0.5", epochs=4)
    train_fold(cfg, "all")
    stop_after["epochs"] = 99
    resumed = train_fold(cfg, "all", resume=True)
    a = load_file(straight / "weights.safetensors")
    b = load_file(resumed / "weights.safetensors")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("fraction", "epochs", "first"), [(0.0, 10, 10), (0.25, 10, 7), (0.25, 2, 1), (1.0, 5, 0)]
)
def test_which_epochs_are_averaged(fraction, epochs, first):
    assert WeightAverage(fraction).first_epoch(epochs) == first
