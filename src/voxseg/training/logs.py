"""Training logs: ``training_log.csv``, ``progress.png``, per-epoch slice snapshots, and
opt-in trackers (TensorBoard, Weights & Biases offline, MLflow to a local folder)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from voxseg.config import atomic_write_text
from voxseg.errors import VoxsegError
from voxseg.modelconfig import LoggingConfig


def write_csv_log(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite the whole log from the history (atomic, so a crash never truncates it)."""
    if not history:
        return
    keys: list[str] = []
    for row in history:
        keys.extend(k for k in row if k not in keys)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for row in history:
        writer.writerow({k: _fmt(row.get(k)) for k in keys})
    atomic_write_text(path, buf.getvalue())


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def plot_progress(path: Path, history: list[dict[str, Any]]) -> None:
    """Loss curves and validation Dice (raw and EMA) against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(epochs, [h["train_loss"] for h in history], label="train loss", color="tab:blue")
    if any("val_loss" in h for h in history):
        ax.plot(
            epochs, [h.get("val_loss", np.nan) for h in history], label="val loss", color="tab:red"
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    if any("val_dice" in h for h in history):
        for key, style, label in (
            ("val_dice", ":", "val Dice (patches)"),
            ("val_dice_ema", "-", "val Dice EMA"),
        ):
            values = [h.get(key, np.nan) for h in history]
            ax2.plot(epochs, values, style, color="tab:green", label=label)
    ax2.set_ylabel("Dice")
    ax2.set_ylim(0, 1)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="center right")
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def save_snapshot(path: Path, image: np.ndarray, target: np.ndarray, pred: np.ndarray) -> None:
    """Image | reference | prediction for the slice of a validation patch with the most
    foreground (``image`` ``[c, *sp]``, ``target``/``pred`` ``[*sp]``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = image[0]
    if img.ndim == 3:
        k = int(np.argmax((target > 0).reshape(target.shape[0], -1).sum(1)))
        img, target, pred = img[k], target[k], pred[k]
    n = max(int(target.max()), int(pred.max()), 1)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    for ax, overlay, title in zip(
        axes, (None, target, pred), ("image", "reference", "prediction"), strict=True
    ):
        ax.imshow(img, cmap="gray")
        if overlay is not None:
            ax.imshow(
                np.ma.masked_equal(overlay, 0),
                cmap="tab10",
                vmin=0,
                vmax=max(n, 9),
                alpha=0.5,
                interpolation="nearest",
            )
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)


class Trackers:
    """Opt-in experiment trackers; each needs its package installed, none needs a network."""

    def __init__(self, cfg: LoggingConfig, folder: Path, run_name: str, params: dict) -> None:
        self._tb = self._wandb = self._mlflow = None
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise VoxsegError("logging.tensorboard needs `pip install tensorboard`") from exc
            self._tb = SummaryWriter(str(folder / "tensorboard"))
        if cfg.wandb:
            try:
                import wandb
            except ImportError as exc:
                raise VoxsegError("logging.wandb needs `pip install wandb`") from exc
            self._wandb = wandb.init(
                project="voxseg", name=run_name, dir=str(folder), mode=cfg.wandb_mode, config=params
            )
        if cfg.mlflow:
            try:
                import mlflow
            except ImportError as exc:
                raise VoxsegError("logging.mlflow needs `pip install mlflow`") from exc
            mlflow.set_tracking_uri(cfg.mlflow_uri or (folder / "mlruns").as_uri())
            mlflow.start_run(run_name=run_name)
            mlflow.log_params({k: str(v)[:250] for k, v in params.items()})
            self._mlflow = mlflow

    def log(self, row: dict[str, Any], step: int) -> None:
        scalars = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "epoch"}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)
        if self._mlflow is not None:
            self._mlflow.log_metrics(scalars, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._mlflow is not None:
            self._mlflow.end_run()
