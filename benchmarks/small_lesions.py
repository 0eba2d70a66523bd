"""Small lesions on a CPU budget: ``voxseg auto`` on organ phantoms with 4–10 mm liver lesions.

    python benchmarks/small_lesions.py                      # 24 + 30 cases, 48×96×96, 15 min
    python benchmarks/small_lesions.py --minutes 1 --num-train 6 --num-test 2 \\
        --shape 24 96 96                                    # a check of the script

Data: ``voxseg synth organs --lesions`` (liver 1, kidney 2, spleen 3, lesion 4: 1–4 round
liver lesions of 4–10 mm per case, some cases lesion-free; CT-like, varying spacing and
orientation), generated once under ``benchmarks/_work/small_lesions/`` (``--seed``).

Run: ``voxseg auto RAW --time-budget M --device cpu`` (the whole flow inside the budget; on
these phantoms the small-structure rule adds the full-resolution ``small`` stage), then
``voxseg predict -m models/<dataset>/auto`` on the held-out cases, and the same prediction
with the whole-image stage alone (``stages/whole``, what ``auto`` gave before the rule) for
comparison. Prediction time is reported, not counted in the budget.

Scores on the held-out cases (``voxseg.evaluation``): Dice per label (mean over cases, as
``voxseg evaluate``; a case without lesions in reference and prediction counts as 1), the
lesion Dice pooled over all cases (2·Σ overlap / (Σ predicted + Σ reference voxels)), and the
lesion-wise sensitivity: the share of reference lesions (26-connected components) that a
predicted lesion overlaps (``lesion_detection``, pooled over cases), with the precision, and
the sensitivity by lesion size (diameter of the sphere of the labelled volume) and by
visibility: the lesion's contrast to its shell as a z-score against the same mask moved
through the case's liver (``visibility``: what an observer who knows the lesion's shape and
place could see; under 3 a liver holds texture blobs as dark as the lesion), and what a
searching observer finds with as many false positives as the model (``search_candidates``:
a matched filter for dark 4–10 mm balls, given the true liver, not the lesions' places: a
strong reference for what a model could find, not a strict bound, as the phantom's noise is
correlated and a filter that whitens it could do somewhat better). 30 held-out
cases hold 56 lesions; 6 held 9, too few for a sensitivity figure (one lesion = 0.11).
Targets (issue 25): lesion Dice ≥ 0.5 and lesion-wise sensitivity ≥ 0.8 in 15 CPU minutes,
organs not worse than without the stage.

Writes ``benchmarks/_work/small_lesions/results.json`` and every log under that folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _common import WORK, format_table, machine_info, run_measured

LABELS = {"liver": 1, "kidney": 2, "spleen": 3, "lesion": 4}
#: lesion size bins (mm, equivalent-sphere diameter) of the sensitivity by size
SIZE_BINS = (6.0, 8.0)
#: lesion visibility bins (z, :func:`visibility`) of the sensitivity by visibility
VISIBILITY_BINS = (3.0, 4.0)
#: places of a lesion's mask in its case's liver that :func:`visibility` draws (and needs)
VISIBILITY_DRAWS, VISIBILITY_MIN = 400, 30
#: ball radii (mm) the searching observer (:func:`search_candidates`) tries: the phantom's
#: 4–10 mm diameters; its candidates are local maxima this far (mm) apart, above z = 2
SEARCH_RADII_MM, SEARCH_SEPARATION_MM, SEARCH_FLOOR = (2.0, 3.0, 4.0, 5.0), 3.0, 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=15.0, help="voxseg auto's time budget")
    p.add_argument("--num-train", type=int, default=24)
    p.add_argument("--num-test", type=int, default=30)
    p.add_argument("--shape", type=int, nargs=3, default=[48, 96, 96], metavar=("Z", "Y", "X"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--processes", type=int, default=2, help="voxseg auto -p")
    p.add_argument("--work", type=Path, default=WORK / "small_lesions")
    return p.parse_args(argv)


def generate(args: argparse.Namespace) -> Path:
    """The phantoms, generated once per option set."""
    from voxseg.synth import generate as synth

    tag = f"n{args.num_train}-{args.num_test}_s{'x'.join(map(str, args.shape))}_seed{args.seed}"
    raw = args.work / "raw" / tag / "Dataset061_Lesions"
    if not (raw / "dataset.json").is_file():
        synth(
            "organs",
            raw,
            num_train=args.num_train,
            num_test=args.num_test,
            shape=tuple(args.shape),
            seed=args.seed,
            lesions=True,
            overwrite=True,
        )
    return raw


def score(pred_dir: Path, raw: Path, split: str = "Ts") -> dict:
    """Dice per label, pooled lesion Dice, lesion-wise sensitivity and precision."""
    import cc3d
    import numpy as np

    from voxseg.evaluation import evaluate_folder, lesion_detection
    from voxseg.io import read_image

    summary = evaluate_folder(pred_dir, raw / f"labels{split}", labels=LABELS, surface=False)
    dice = {k: summary["mean"][k]["dice"] for k in LABELS}
    overlap = pred_sum = ref_sum = 0
    counts = np.zeros(4, dtype=np.int64)
    by_size = np.zeros((len(SIZE_BINS) + 1, 2), dtype=np.int64)  # detected, reference
    by_view = np.zeros((len(VISIBILITY_BINS) + 2, 2), dtype=np.int64)  # the last: NaN
    rng = np.random.default_rng(0)
    candidates = []
    for case, ref_path in enumerate(sorted((raw / f"labels{split}").glob("*.nii.gz"))):
        ref = read_image(ref_path)
        image = read_image(
            raw / f"images{split}" / ref_path.name.replace(".nii.gz", "_0000.nii.gz")
        )
        pred = read_image(pred_dir / ref_path.name).array == LABELS["lesion"]
        truth = ref.array == LABELS["lesion"]
        overlap += int((pred & truth).sum())
        pred_sum, ref_sum = pred_sum + int(pred.sum()), ref_sum + int(truth.sum())
        d = lesion_detection(pred, truth, ref.spacing)
        counts += [d.n_ref, d.detected_ref, d.n_pred, d.true_pred]
        objects = cc3d.connected_components(truth, connectivity=26)
        sizes = np.bincount(objects.ravel())[1:] * float(np.prod(ref.spacing))
        found = np.zeros(sizes.size, dtype=bool)
        found[np.unique(objects[pred & truth]) - 1] = True
        bins = np.digitize((6 * sizes / np.pi) ** (1 / 3), SIZE_BINS)
        np.add.at(by_size, (bins, 0), found)
        np.add.at(by_size, (bins, 1), 1)
        host = ref.array == LABELS["liver"]
        for k in range(sizes.size):
            z = visibility(image.array.astype(np.float32), host, objects == k + 1, rng)
            b = len(VISIBILITY_BINS) + 1 if np.isnan(z) else int(np.digitize(z, VISIBILITY_BINS))
            by_view[b] += [found[k], 1]
        candidates += [
            (z, (case, k) if k else 0)
            for z, k in search_candidates(image.array, host | truth, objects, ref.spacing)
        ]
    n_ref, detected, n_pred, true_pred = (int(v) for v in counts)
    size_names = [
        f"< {SIZE_BINS[0]:g} mm",
        *(f"{a:g}–{b:g} mm" for a, b in zip(SIZE_BINS[:-1], SIZE_BINS[1:], strict=True)),
        f"≥ {SIZE_BINS[-1]:g} mm",
    ]
    view_names = [
        f"z < {VISIBILITY_BINS[0]:g}",
        *(f"z {a:g}–{b:g}" for a, b in zip(VISIBILITY_BINS[:-1], VISIBILITY_BINS[1:], strict=True)),
        f"z ≥ {VISIBILITY_BINS[-1]:g}",
        "z n/a",
    ]
    return {
        "dice": dice,
        "lesion_dice_pooled": 2 * overlap / (pred_sum + ref_sum) if pred_sum + ref_sum else None,
        "lesion_sensitivity": detected / n_ref if n_ref else None,
        "lesion_precision": true_pred / n_pred if n_pred else None,
        "reference_lesions": n_ref,
        "detected_lesions": detected,
        "predicted_lesions": n_pred,
        "detected_by_diameter": {
            n: [int(a), int(b)] for n, (a, b) in zip(size_names, by_size, strict=True)
        },
        "detected_by_visibility": {
            n: [int(a), int(b)] for n, (a, b) in zip(view_names, by_view, strict=True)
        },
        # the searching observer with as many false positives as the model
        "observer_detected_lesions": search_detections(candidates, n_pred - true_pred),
    }


def _shell(mask):
    """The voxels up to 2 steps (26-connected) outside ``mask``, within its array."""
    import numpy as np
    from scipy import ndimage

    return ndimage.binary_dilation(mask, np.ones((3,) * mask.ndim, dtype=bool), 2) & ~mask


def visibility(image, host, lesion, rng) -> float:
    """How far a lesion stands out of its host's texture for an observer who knows its
    shape and place (a matched filter): the contrast ``mean(shell) − mean(lesion)`` (shell:
    the host voxels 2 voxels out, 26-connected) as a z-score against the same statistic of
    the same mask moved to random places in the case's host (mask inside the host, shell at
    least 80 % host; the host holds no lesion voxel). NaN where fewer than ``VISIBILITY_MIN`` places
    fit (large lesions in a small liver)."""
    import numpy as np

    idx = np.argwhere(lesion)
    lo, hi = idx.min(0) - 2, idx.max(0) + 3
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    mask = lesion[box]
    shell = _shell(mask)

    def contrast(offset):
        sl = tuple(slice(a + o, b + o) for a, b, o in zip(lo, hi, offset, strict=True))
        if any(s.start < 0 or s.stop > n for s, n in zip(sl, image.shape, strict=True)):
            return None
        h = host[sl]
        if not h[mask].all() or h[shell].mean() < 0.8:
            return None
        sub = image[sl]
        return float(sub[shell & h].mean() - sub[mask].mean())

    sub, h = image[box], host[box] | lesion[box]
    own = float(sub[shell & h].mean() - sub[mask].mean())
    places = np.argwhere(host)
    centre = idx.mean(0).astype(int)
    null = []
    for p in places[rng.integers(len(places), size=VISIBILITY_DRAWS)]:
        value = contrast(p - centre)
        if value is not None:
            null.append(value)
    if len(null) < VISIBILITY_MIN:
        return float("nan")
    return (own - float(np.mean(null))) / float(np.std(null))


def _ellipsoid(radius_mm: float, spacing):
    """The ball of ``radius_mm`` on a grid of ``spacing`` (mm per axis), a bool array."""
    import numpy as np

    half = [int(radius_mm / s) for s in spacing]
    grid = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    return sum((g * s / radius_mm) ** 2 for g, s in zip(grid, spacing, strict=True)) <= 1.0


def search_candidates(image, host, lesions, spacing) -> list[tuple[float, int]]:
    """A searching observer on one case: it knows the liver (``host``, lesions included) and
    that lesions are dark balls of 4–10 mm, not where they are. For each radius of
    ``SEARCH_RADII_MM`` it computes, at every place where the ball lies inside the liver, the
    contrast ``mean(shell) − mean(ball)`` (shell: 2 voxels out, its liver part, at least 80 %
    liver), as a z-score against the same statistic at the places whose ball and shell touch
    no lesion; its score is the best z over the radii. Candidates are the score's local
    maxima (``SEARCH_SEPARATION_MM`` apart) above ``SEARCH_FLOOR``: ``(z, lesion id)``, id 0
    for a false positive (``lesions``: the reference lesions' component ids; a candidate on
    a lesion or its one-voxel rim finds it)."""
    import numpy as np
    from scipy import ndimage
    from scipy.signal import fftconvolve

    image = image.astype(np.float64)
    host = host.astype(np.float64)
    touched = (lesions > 0).astype(np.float64)
    cube = np.ones((3,) * image.ndim, dtype=bool)
    best = np.full(image.shape, -np.inf)

    def conv(a, k):
        return fftconvolve(a, k.astype(np.float64), mode="same")

    for radius in SEARCH_RADII_MM:
        ball = _ellipsoid(radius, spacing)
        shell = _shell(np.pad(ball, 2))
        nb, ns = float(ball.sum()), float(shell.sum())
        inside = conv(host, ball) > nb - 0.5
        shell_host = conv(host, shell)
        valid = inside & (shell_host >= 0.8 * ns)
        contrast = conv(image * host, shell) / np.maximum(shell_host, 1) - conv(image, ball) / nb
        null = valid & (conv(touched, np.pad(ball, 2) | shell) < 0.5)
        if null.sum() < VISIBILITY_MIN:
            continue
        z = (contrast - contrast[null].mean()) / contrast[null].std()
        best = np.where(valid, np.maximum(best, z), best)
    size = [max(1, 2 * int(SEARCH_SEPARATION_MM / s) + 1) for s in spacing]
    peaks = (best == ndimage.maximum_filter(best, size=size)) & (best > SEARCH_FLOOR)
    rim = ndimage.grey_dilation(lesions, footprint=cube)
    return [(float(best[p]), int(rim[p])) for p in map(tuple, np.argwhere(peaks))]


def search_detections(candidates: list[tuple[float, object]], false_positives: int) -> int:
    """How many lesions the searching observer finds at a threshold that lets through at
    most ``false_positives`` of its candidates (``(z, lesion key)``, key 0: none)."""
    found, fp = set(), 0
    for _, key in sorted(candidates, key=lambda c: -c[0]):
        if key == 0:
            fp += 1
            if fp > false_positives:
                break
        else:
            found.add(key)
    return len(found)


def main() -> None:
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    raw = generate(args)
    run = args.work / f"auto_{args.minutes:g}min_{raw.parent.name}"
    home = run / "home"
    voxseg = [sys.executable, "-m", "voxseg.cli"]
    budget = f"{int(round(args.minutes * 60))}s"
    auto = run_measured(
        [*voxseg, "auto", raw, "-t", budget, "--device", "cpu", "--home", home, "--no-report"]
        + ["-p", str(args.processes)],
        log=run / "auto.log",
    )
    folder = home / "models" / raw.name / "auto"
    summary = json.loads((folder / "summary.json").read_text())
    models = {"auto": folder}
    if (folder / "pipeline.json").is_file():
        models["whole-image stage alone"] = folder / "stages" / "whole"
    results = {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()}}
    results["auto"] = {
        "wall_seconds": round(auto.wall_s, 1),
        "budget_seconds": args.minutes * 60,
        "small_structures": summary.get("small_structures"),
        "runs": summary.get("runs"),
        "why": summary.get("why"),
    }
    rows = []
    for name, model in models.items():
        pred_dir = run / "predictions" / name.split()[0]
        predicted = run_measured(
            [*voxseg, "predict", "-i", raw / "imagesTs", "-o", pred_dir, "-m", model]
            + ["--device", "cpu"],
            log=run / f"predict_{name.split()[0]}.log",
        )
        scores = score(pred_dir, raw)
        scores["predict_seconds"] = round(predicted.wall_s, 1)
        results[name] = scores
        d = scores["dice"]
        rows.append(
            [
                name,
                *(f"{d[k]:.3f}" for k in LABELS),
                _fmt(scores["lesion_dice_pooled"]),
                f"{_fmt(scores['lesion_sensitivity'])} "
                f"({scores['detected_lesions']}/{scores['reference_lesions']})",
                _fmt(scores["lesion_precision"]),
                " · ".join(f"{a}/{b}" for a, b in scores["detected_by_diameter"].values()),
                " · ".join(f"{a}/{b}" for a, b in scores["detected_by_visibility"].values()),
                f"{scores['observer_detected_lesions']}/{scores['reference_lesions']}",
                f"{predicted.wall_s:.0f}",
            ]
        )
    (args.work / "results.json").write_text(json.dumps(results, indent=2))
    print(f"voxseg auto, {args.minutes:g} min budget: {auto.wall_s:.0f} s wall")
    small = summary.get("small_structures") or {}
    print(f"small structures: {small.get('why', '-')}")
    print(
        format_table(
            [
                "model",
                *(f"{k} Dice" for k in LABELS),
                "lesion Dice pooled",
                "lesion sensitivity",
                "lesion precision",
                "found by size (" + ", ".join(scores["detected_by_diameter"]) + ")",
                "found by visibility (" + ", ".join(scores["detected_by_visibility"]) + ")",
                "searching observer, same false positives",
                "predict s",
            ],
            rows,
        )
    )
    print(f"results: {args.work / 'results.json'}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
