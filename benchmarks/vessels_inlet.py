"""The vessels recipe on held-out trees, and the same trees moved 1 mm inside the field of
view with a seed at the inlet (the case of a tree a user clicks at its root).

Run in the folder where the recipe ran (``raw/Dataset511_V``, ``pipe/``, ``traced/``):

    voxseg synth vessels raw/Dataset511_V --num-train 6 --num-test 3 --shape 64 64 64 --seed 1
    voxseg pipeline init vessels raw/Dataset511_V pipe --device cpu \
        --set training.time_budget=720 --set training.val_iterations=0
    voxseg pipeline train pipe raw/Dataset511_V --device cpu
    voxseg pipeline predict pipe raw/Dataset511_V/imagesTs traced --allow-short
    python /path/to/benchmarks/vessels_inlet.py

It scores ``traced/`` (the recipe's seeds: two radii into a trunk that enters through the
first slice), then for each held-out tree adds background slices before the first slice so
the trunk starts 1 mm inside the field of view with nothing behind it, puts a seed 0.8 mm
from the trunk's start pointing in, traces it with ``voxseg trace -m pipe/stages/vessel``
(the model's own prediction settings) and scores Dice and centerline overlap against the
analytic tree.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from voxseg.io import Geometry, Image, read_image, read_vtp, write_image
from voxseg.vessels import centerline_metrics, read_centerline_json

raw = Path("raw/Dataset511_V")
out = Path("inlet")
out.mkdir(exist_ok=True)
VOXSEG = [sys.executable, "-m", "voxseg.cli"]  # this environment's voxseg


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


rows = []
for lab in sorted((raw / "labelsTs").glob("*.nii.gz")):
    case = lab.name[:-7]
    truth = read_image(lab)
    cl = read_vtp(raw / "centerlines" / f"{case}.vtp")
    pred = read_image(Path("traced") / f"{case}.nii.gz")
    m = centerline_metrics(pred.with_array((pred.array > 0).astype(np.uint8)), cl)
    rows.append(
        ("recipe seeds", case, dice(pred.array > 0, truth.array > 0), m["centerline_overlap"])
    )
    img = read_image(raw / "imagesTs" / f"{case}_0000.nii.gz")
    g = img.geometry
    k = int(np.ceil(1.0 / g.spacing[0])) + 1  # slices of background before slice 0
    bg = np.median(img.array[:3][truth.array[:3] == 0])
    rng = np.random.default_rng(0)
    pad = (bg + 0.05 * rng.standard_normal((k, *img.shape[1:]))).astype(np.float32)
    origin = g.index_to_physical(np.array([-k, 0, 0], float))
    g2 = Geometry((img.shape[0] + k, *img.shape[1:]), g.spacing, tuple(origin), g.direction)
    img2 = Image.from_geometry(np.concatenate([pad, img.array.astype(np.float32)]), g2)
    lab2 = Image.from_geometry(
        np.concatenate([np.zeros((k, *img.shape[1:]), np.uint8), truth.array.astype(np.uint8)]), g2
    )
    tree = read_centerline_json(raw / "centerlines" / f"{case}.json")
    trunk = tree.branches[0]
    p = trunk.points
    arc = np.r_[0, np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))]
    seed = np.array([np.interp(0.8, arc, p[:, j]) for j in range(3)])
    ahead = np.array([np.interp(3.0, arc, p[:, j]) for j in range(3)])
    d = (ahead - seed) / np.linalg.norm(ahead - seed)
    (out / case).mkdir(exist_ok=True)
    write_image(img2, out / case / "image_0000.nii.gz")
    (out / case / "seeds.json").write_text(
        json.dumps([[seed.tolist(), d.tolist(), float(trunk.radii[0])]])
    )
    r = subprocess.run(
        [
            *VOXSEG,
            "trace",
            str(out / case / "image_0000.nii.gz"),
            "--seeds",
            str(out / case / "seeds.json"),
            "-m",
            "pipe/stages/vessel",
            "-o",
            str(out / case / "traced"),
        ],
        capture_output=True,
        text=True,
    )
    print(case, "exit", r.returncode, r.stdout.strip().splitlines()[:2], r.stderr.strip()[-300:])
    seg = read_image(out / case / "traced" / "segmentation.nii.gz")
    m2 = centerline_metrics(seg, cl)
    rows.append(
        (
            "inlet seed, tree 1 mm inside",
            case,
            dice(seg.array > 0, lab2.array > 0),
            m2["centerline_overlap"],
        )
    )
for r in rows:
    print(f"{r[0]:32s} {r[1]:18s} Dice {r[2]:.3f} overlap {r[3]:.3f}")
for name in dict.fromkeys(r[0] for r in rows):
    sel = [r for r in rows if r[0] == name]
    mean_dice, mean_overlap = np.mean([r[2] for r in sel]), np.mean([r[3] for r in sel])
    print(f"{name:32s} mean Dice {mean_dice:.3f} overlap {mean_overlap:.3f}")
