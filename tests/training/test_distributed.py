"""Two processes with torchrun + gloo on the CPU: DDP keeps the weights identical."""

import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

SCRIPT = """
import sys
from pathlib import Path

from voxseg.config import apply_overrides
from voxseg.nets import save_weights
from voxseg.training import ModelConfig
from voxseg.training.distributed import init_distributed, shutdown
from voxseg.training.setup import TrainingSetup
from voxseg.training.trainer import Trainer

out = Path(sys.argv[1])
cfg = apply_overrides(ModelConfig(dataset="Organs"), [
    "training.epochs=1", "training.iterations_per_epoch=3", "training.val_iterations=1",
    "training.batch_size=1", "training.num_workers=0", "training.device=cpu",
    "logging.snapshots=false",
])
info = init_distributed("cpu")
trainer = Trainer(TrainingSetup.create(cfg, "all"), dist_info=info)
trainer.fit()
save_weights(trainer.network, out / f"rank{info.rank}.safetensors")
shutdown(info)
"""


def test_ddp_on_cpu_keeps_ranks_in_sync(tiny_home, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VOXSEG_HOME": str(tiny_home)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        str(script),
        str(tmp_path),
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # channels-last on the CPU: the parameters take their gradients' strides before DDP
    # builds its buckets, so torch has no layout mismatch to warn about
    assert "Grad strides do not match" not in result.stderr
    w0 = load_file(tmp_path / "rank0.safetensors")
    w1 = load_file(tmp_path / "rank1.safetensors")
    assert w0.keys() == w1.keys()
    for k in w0:
        torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0)
    model = tiny_home / "models" / "Dataset001_Organs" / "default" / "3d_fullres" / "fold_all"
    assert (model / "weights.safetensors").is_file()
    assert len((model / "training_log.csv").read_text().splitlines()) == 2
