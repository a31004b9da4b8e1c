"""How sure the map is, measured: calibration and design-based accuracy with other strata.

1. Calibration: on the generated scene (500 x 500, wall-to-wall labels), a U-Net and a LightGBM
   model are trained through the public stages; ``evaluate`` reports the expected calibration error
   on the test split's pixels (held out from training and from the temperature's fit) as trained
   (the baseline) and with the temperature fitted on the validation split; and how much more often
   the most uncertain quarter of the map is wrong than the most certain quarter.
2. Stehman (2014): strata from one map of the scene (its labels with 30 % of pixels given a class
   drawn from the scene's mix), a second map assessed (15 %); ``--reps`` stratified samples of 50
   and of 200 units per stratum; the mean of the estimates against the population value
   (known: the labels are the truth everywhere) and the coverage of the 95 % intervals.

    python benchmarks/bench_uncertainty.py [--epochs 8] [--reps 1000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time

import numpy as np
from _common import WORK, peak_rss_mb, save, scene

SIZE = 500


def calibration(args) -> dict:
    import xarray as xr

    from kerinci_xr import api
    from kerinci_xr.cube import open_cube

    folder = scene(args.size, seed=3)
    work = WORK / "uncertainty"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cube = api.prepare(
        folder / "Landsat_Kerinci_2023_v1.tif",
        labels=folder / "LC_Image_v1.tif",
        legend=folder / "lc.json",
        chunk=args.size,
        out=work / "cube.zarr",
    )["cube"]
    patch = 64 if args.size >= 400 else 32
    store = api.sample(cube, out=work / "patches.zarr", per_class=10, patch=patch, seed=0)["patches"]
    labels = open_cube(cube)["labels"].values
    out = {}
    for name, kw in (
        ("unet", {"epochs": args.epochs, "depth": 3, "base": 16, "lr": 3e-3}),
        ("lightgbm", {"model": "lightgbm", "rounds": 150, "windows": (3, 7)}),
    ):
        t0 = time.perf_counter()
        model = api.train(store, out=work / f"{name}.pt", **kw)["model"]
        rec = api.evaluate(store, model=model, out=work / f"{name}.json")["report"]["calibration"]
        pred = api.predict(cube, model=model, out=work / f"{name}.zarr")["prediction"]
        ds = xr.open_zarr(pred)
        cls, ent = ds["classes"].values, ds["entropy"].values
        ok = (labels > 0) & (cls > 0)
        wrong, e = (cls != labels)[ok], ent[ok]
        lo, hi = np.quantile(e, [0.25, 0.75])
        out[name] = {
            "temperature": rec["temperature"],
            "test_pixels": rec["before"]["pixels"],
            "ece_uncalibrated": rec["before"]["ece"],
            "ece_calibrated": rec["after"]["ece"],
            "error_rate_most_uncertain_quarter": float(wrong[e >= hi].mean()),
            "error_rate_most_certain_quarter": float(wrong[e <= lo].mean()),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(name, json.dumps(out[name]), flush=True)
    return out


def stehman(args) -> dict:
    return {f"{u}_per_stratum": _stehman(args, u) for u in (50, 200)}


def _stehman(args, units_per_stratum: int) -> dict:
    import rasterio

    from kerinci_xr.legend import read_legend
    from kerinci_xr.testing import strata_simulation, with_errors

    folder = scene(args.size, seed=3)
    legend = read_legend(folder / "lc.json")
    with rasterio.open(folder / "LC_Image_v1.tif") as src:
        codes = src.read(1).ravel()
    lut = np.zeros(int(codes.max()) + 1, np.int64)
    for i, c in enumerate(legend.values):
        if c < lut.size:
            lut[c] = i + 1
    truth = lut[codes]
    truth = truth[truth > 0]
    rng = np.random.default_rng(0)
    map1, map2 = (
        with_errors(truth, 0.3, rng),
        with_errors(truth, 0.15, rng),
    )  # strata from map 1; map 2 assessed
    sim = strata_simulation(
        truth, map1, map2, n_classes=legend.n_classes, units=units_per_stratum, reps=args.reps
    )
    rows = {}
    for k, r in sim.items():
        what, _, cid = k.partition(" ")
        name = f"{what} {legend.names[int(cid) - 1]}" if cid else what
        est = r["estimates"]
        rows[name] = {
            "true": r["true"],
            "mean_estimate": float(est.mean()),
            "bias": float(est.mean() - r["true"]),
            "mc_se": float(est.std(ddof=1) / np.sqrt(args.reps)),
            "coverage": float(r["covered"].mean()),
        }
    print(f"{units_per_stratum} units per stratum, {args.reps} samples", flush=True)
    for k, r in rows.items():
        print(
            f"{k:<34} true {r['true']:.4f}  mean {r['mean_estimate']:.4f}  bias {r['bias']:+.4f} "
            f"(MC se {r['mc_se']:.4f})  coverage {r['coverage']:.3f}",
            flush=True,
        )
    strata = int((np.unique(map1, return_counts=True)[1] >= 2 * units_per_stratum).sum())
    return {"strata": strata, "units_per_stratum": units_per_stratum, "reps": args.reps, "parameters": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--only", choices=("calibration", "stehman"))
    ap.add_argument("--size", type=int, default=SIZE, help="scene edge in pixels")
    args = ap.parse_args()
    result = {}
    if args.only in (None, "stehman"):
        result["stehman"] = stehman(args)
    if args.only in (None, "calibration"):
        result["calibration"] = calibration(args)
    save(
        "bench_uncertainty",
        result | {"baseline": "uncalibrated ECE (temperature 1)", "peak_rss_mb": round(peak_rss_mb(), 1)},
    )


if __name__ == "__main__":
    main()
