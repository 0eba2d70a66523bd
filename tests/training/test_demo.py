"""``voxseg demo`` end to end: ``voxseg auto`` with a 4-minute budget on the organ phantoms,
then prediction and evaluation of the held-out cases. Measured on 2 idle CPU cores: liver
0.86, kidney 0.67, spleen 0 (mean 0.51) after 969 iterations (benchmarks/RESULTS.md)."""

import pytest


@pytest.mark.slow
def test_demo_runs_auto_and_learns_the_large_organs(tmp_path):
    from voxseg.pipelines.demo import DemoSettings, run_demo

    summary = run_demo(DemoSettings(output=tmp_path / "demo", device="cpu"))
    dice = {label: m["dice"] for label, m in summary["mean"].items()}
    assert set(dice) == {"liver", "kidney", "spleen"}
    assert dice["liver"] > 0.5, dice
    assert summary["foreground_mean"]["dice"] > 0.3, dice
    assert (
        tmp_path / "demo" / "home" / "models" / "Dataset001_Organs" / "auto" / "summary.json"
    ).is_file()
