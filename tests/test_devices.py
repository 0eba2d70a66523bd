import numpy as np
import pytest
import torch

from voxseg import devices
from voxseg.devices import amp_dtype, use_channels_last
from voxseg.errors import VoxsegError
from voxseg.inference.sliding_window import WindowSettings, predict_logits

CPU = torch.device("cpu")


@pytest.mark.parametrize("fast", [True, False])
def test_auto_precision_on_cpu_follows_the_hardware(monkeypatch, fast):
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: fast)
    assert amp_dtype("auto", CPU) == (torch.bfloat16 if fast else None)
    assert amp_dtype("auto", torch.device("mps")) is None
    assert amp_dtype("off", CPU) is None
    assert amp_dtype("bf16", CPU) == torch.bfloat16
    assert amp_dtype("fp16", CPU) == torch.float16


def test_unknown_precision_is_an_error():
    with pytest.raises(VoxsegError, match="amp must be"):
        amp_dtype("fp8", CPU)


def test_channels_last_is_automatic_on_the_cpu_only():
    assert use_channels_last("auto", CPU) is True
    assert use_channels_last("auto", CPU, spatial_dims=2) is False
    assert use_channels_last("auto", torch.device("cuda")) is False
    assert use_channels_last(False, CPU) is False
    assert use_channels_last(True, torch.device("cuda")) is True
    with pytest.raises(VoxsegError, match="channels_last must be"):
        use_channels_last("yes", CPU)


def test_bf16_windows_agree_with_float32():
    """bf16 autocast changes the logits by rounding only: the label map stays the same
    wherever the float32 margin between the two best classes is not tiny."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 3, 3, padding=1)
    ).eval()
    x = np.random.default_rng(0).normal(size=(1, 20, 40, 36)).astype(np.float32)
    ref = predict_logits(x, [net], 3, WindowSettings((16, 24, 24), tta=False), device=CPU)
    got = predict_logits(
        x, [net], 3, WindowSettings((16, 24, 24), tta=False, amp=torch.bfloat16), device=CPU
    )
    assert got.dtype == torch.float32
    scale = ref.abs().max()
    assert (got - ref).abs().max() < 0.02 * scale
    top2 = ref.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 0.05 * scale
    assert clear.float().mean() > 0.5
    assert torch.equal(got.argmax(0)[clear], ref.argmax(0)[clear])
