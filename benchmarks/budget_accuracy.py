"""How close ``--time-budget`` ends to its budget: ``voxseg auto --time-budget M`` for each M.

For each budget, ``voxseg auto`` runs in a fresh workspace on the phantom set of
``auto_vs_nnunet.py`` (same data, generated once by ``voxseg synth``), and the script prints

* the command's wall time (process start to exit, as a user's clock sees it) against M;
* ``auto``'s own account (``auto_state.json``: seconds spent from its start);
* each training run's budget and what it spent (``budget.json``: ``voxseg train
  --time-budget``'s accuracy inside ``auto``), with the epochs it fixed and its refits.

The issue's target is ±5 % of the budget on an unloaded machine. There is no peer: neither
nnU-Net nor Auto3DSeg takes a wall-clock budget.

    python benchmarks/budget_accuracy.py --minutes 3 10 30
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _common import machine_info, run_measured
from auto_vs_nnunet import OUT as AVN_WORK
from auto_vs_nnunet import _fresh, _log, _voxseg, _write_json, prepare

OUT = AVN_WORK.parent / "budget_accuracy"


def run(raw: Path, minutes: float, work: Path) -> dict:
    home = _fresh(work / "home")
    budget = minutes * 60
    cmd = [*_voxseg(), "auto", raw, "--time-budget", f"{round(budget)}s", "--device", "cpu"]
    measured = run_measured([*cmd, "--home", home], log=work / "auto.log")
    if measured.returncode != 0:
        raise SystemExit(f"voxseg auto failed; see {work / 'auto.log'}")
    model = home / "models" / raw.name / "auto"
    state = json.loads((model / "auto_state.json").read_text())
    summary = json.loads((model / "summary.json").read_text())
    runs = []
    for trained in summary["runs"]:  # each run once (the model folder holds a copy of one)
        b = trained.get("budget")
        if not b:
            continue
        runs.append(
            {
                "run": f"{trained['configuration']} fold {trained['fold']}",
                "budget_s": b["budget_seconds"],
                "spent_s": b["spent_seconds"],
                "epochs": b["epochs"],
                "iterations_per_epoch": b["iterations_per_epoch"],
                "seconds_per_iteration": b["seconds_per_iteration"],
                "reserved_s": b.get("reserved_for_validation_seconds"),
                "validation_s": b.get("validation_seconds"),
                "refits": b.get("refits"),
            }
        )
    return {
        "minutes": minutes,
        "budget_s": budget,
        "wall_s": measured.wall_s,
        "auto_spent_s": state["spent"],
        "steps": state["steps"],
        "runs": runs,
    }


def _pct(x: float, of: float) -> str:
    return f"{100 * (x - of) / of:+.1f} %"


def table(rows: list[dict]) -> str:
    lines = [
        "| budget | command wall | vs budget | auto's clock | training run: budget → spent "
        "(vs its budget) | epochs × it | s/it | validation reserved / took |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for i, t in enumerate(r["runs"] or [None]):
            head = (
                [
                    f"{r['minutes']:g} min",
                    f"{r['wall_s']:.1f} s",
                    _pct(r["wall_s"], r["budget_s"]),
                    f"{r['auto_spent_s']:.1f} s",
                ]
                if i == 0
                else ["", "", "", ""]
            )
            if t is None:
                lines.append("| " + " | ".join([*head, "–", "–", "–", "–"]) + " |")
                continue
            lines.append(
                "| "
                + " | ".join(
                    [
                        *head,
                        f"{t['run']}: {t['budget_s']:.1f} → {t['spent_s']:.1f} s "
                        f"({_pct(t['spent_s'], t['budget_s'])})",
                        f"{t['epochs']} × {t['iterations_per_epoch']}",
                        f"{t['seconds_per_iteration']:.3f}",
                        f"{t['reserved_s']} / {t['validation_s']} s",
                    ]
                )
                + " |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["organs", "2d"], default="organs")
    parser.add_argument("--minutes", type=float, nargs="+", default=[3.0, 10.0, 30.0])
    parser.add_argument("--num-train", type=int, default=None)
    parser.add_argument("--num-test", type=int, default=None)
    parser.add_argument("--shape", type=int, nargs=3, default=None)
    parser.add_argument("--shape-2d", type=int, nargs=2, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    raw = prepare(args.dataset, args)
    results = {
        "command": " ".join(["python", "benchmarks/budget_accuracy.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "rows": [],
    }
    for minutes in args.minutes:
        _log(f"{args.dataset}, {minutes:g} min: voxseg auto ...")
        row = run(raw, minutes, OUT / f"{args.dataset}_{minutes:g}min")
        _log(f"  wall {row['wall_s']:.1f} s ({_pct(row['wall_s'], row['budget_s'])})")
        results["rows"].append(row)
        _write_json(OUT / "results.json", results)
    print(table(results["rows"]))
    print(f"\nresults: {OUT / 'results.json'}")


if __name__ == "__main__":
    main()
