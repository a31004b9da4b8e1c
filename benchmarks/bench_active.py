"""Active learning: does ``suggest`` pick better points to label than random ones?

On the generated Kerinci-like scene (500 x 500, its label map the full truth) the run starts from
``--start`` points per class drawn at random from the truth, then adds ``--rounds`` rounds of
``--add`` points each, chosen either by ``kerinci-xr suggest`` (most uncertain by entropy, spread
over map classes, 10 pixels apart and from every earlier label) or uniformly at random over the
scene (the baseline). Each round goes through the public stages: ``prepare --labels`` with every
file so far (the new points' ``reference`` field filled from the truth: the simulated
interpreter), ``sample``, ``train --model lightgbm`` and ``predict``; the map is then scored
against the truth at every labelled pixel of the scene. Several seeds (a different start sample
each); means and standard deviations per round.

    python benchmarks/bench_active.py [--seeds 0,1,2] [--rounds 3] [--add 100] [--start 50]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from _common import WORK, peak_rss_mb, save, scene
from bench_accuracy import _points_file

SIZE = 500


def _truth(folder: Path):
    import rasterio

    with rasterio.open(folder / "LC_Image_v1.tif") as src:
        return src.read(1), src.transform, src.crs


def _write(path: Path, rows, cols, codes, field: str, tr, crs) -> Path:
    import geopandas as gpd
    import rasterio

    xs, ys = rasterio.transform.xy(tr, list(rows), list(cols))
    gpd.GeoDataFrame(
        {field: [str(int(c)) for c in codes]}, geometry=gpd.points_from_xy(xs, ys), crs=crs
    ).to_file(path)
    return path


def _score(pred: Path, truth: np.ndarray, legend) -> dict:
    import xarray as xr
    from sklearn.metrics import accuracy_score, f1_score

    classes = xr.open_zarr(pred)["classes"].values
    ids = np.zeros(int(truth.max()) + 1, dtype=np.int64)
    for i, code in enumerate(legend.values):
        if code < ids.size:
            ids[code] = i + 1
    ref = ids[truth]
    ok = (ref > 0) & (classes > 0)
    return {
        "overall_accuracy": float(accuracy_score(ref[ok], classes[ok])),
        "macro_f1": float(f1_score(ref[ok], classes[ok], average="macro")),
        "pixels": int(ok.sum()),
    }


def run_arm(arm: str, seed: int, args, folder: Path, work: Path) -> list[dict]:
    from kerinci_xr import api
    from kerinci_xr.legend import read_legend

    truth, tr, crs = _truth(folder)
    legend = read_legend(folder / "lc.json")
    root = work / f"{arm}_{seed}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    files = [_points_file(root / "start.gpkg", folder / "LC_Image_v1.tif", args.start, seed)]
    pick = np.random.default_rng(1000 + seed)  # the random arm's own draws
    curve = []
    for r in range(args.rounds + 1):
        t0 = time.perf_counter()
        d = root / f"round{r}"
        d.mkdir()
        cube = api.prepare(
            folder / "Landsat_Kerinci_2023_v1.tif",
            labels=tuple(str(f) for f in files),
            legend=folder / "lc.json",
            chunk=args.size,
            out=d / "cube.zarr",
        )["cube"]
        store = api.sample(
            cube,
            out=d / "patches.zarr",
            per_class=50,
            patch=16,
            block=32,
            seed=seed,
            fractions=(0.8, 0.2, 0.0),
        )["patches"]
        model = api.train(
            store, out=d / "model.pt", model="lightgbm", rounds=args.trees, windows=(3, 7), seed=seed
        )
        pred = api.predict(cube, model=model["model"], out=d / "prediction.zarr")["prediction"]
        row = {"round": r, "labels": sum(len(__import__("geopandas").read_file(f)) for f in files)}
        row |= _score(pred, truth, legend)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        curve.append(row)
        print(
            f"{arm:>8} seed {seed} round {r}: {row['labels']} labels, OA {row['overall_accuracy']:.4f}, "
            f"macro F1 {row['macro_f1']:.4f} ({row['seconds']} s)",
            flush=True,
        )
        if r == args.rounds:
            break
        nxt = d / "next.gpkg"
        if arm == "suggest":
            api.suggest(
                pred, n=args.add, labels=tuple(str(f) for f in files), min_distance=10, seed=seed, out=nxt
            )
            import geopandas as gpd

            pts = gpd.read_file(nxt)
            pts["reference"] = [str(int(truth[i, j])) for i, j in zip(pts["row"], pts["col"], strict=True)]
            pts.to_file(nxt)  # the interpreter filled the field
        else:
            r_all, c_all = np.nonzero(truth > 0)
            i = pick.choice(r_all.size, size=args.add, replace=False)
            _write(nxt, r_all[i], c_all[i], truth[r_all[i], c_all[i]], "reference", tr, crs)
        files.append(nxt)
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--add", type=int, default=100)
    ap.add_argument("--start", type=int, default=50)
    ap.add_argument("--trees", type=int, default=100, help="LightGBM boosting rounds")
    ap.add_argument("--size", type=int, default=SIZE, help="scene edge in pixels")
    args = ap.parse_args()
    folder = scene(args.size, seed=3)
    work = WORK / "active"
    seeds = [int(s) for s in args.seeds.split(",")]
    curves = {arm: [run_arm(arm, s, args, folder, work) for s in seeds] for arm in ("suggest", "random")}
    summary = []
    for r in range(args.rounds + 1):
        row = {"round": r}
        for arm, runs in curves.items():
            oa = np.array([c[r]["overall_accuracy"] for c in runs])
            f1 = np.array([c[r]["macro_f1"] for c in runs])
            row |= {
                f"{arm}_labels": float(np.mean([c[r]["labels"] for c in runs])),
                f"{arm}_oa_mean": float(oa.mean()),
                f"{arm}_oa_sd": float(oa.std(ddof=1)) if oa.size > 1 else 0.0,
                f"{arm}_f1_mean": float(f1.mean()),
                f"{arm}_f1_sd": float(f1.std(ddof=1)) if f1.size > 1 else 0.0,
            }
        row["oa_gain"] = row["suggest_oa_mean"] - row["random_oa_mean"]
        row["suggest_wins"] = int(
            sum(
                a[r]["overall_accuracy"] > b[r]["overall_accuracy"]
                for a, b in zip(curves["suggest"], curves["random"], strict=True)
            )
        )
        summary.append(row)
        print(json.dumps(row))
    save(
        "bench_active",
        {
            "scene": f"generated {args.size} x {args.size}, seed 3",
            "start_per_class": args.start,
            "add_per_round": args.add,
            "seeds": seeds,
            "model": f"lightgbm, {args.trees} rounds, windows 3,7",
            "baseline": "uniformly random points, same number per round",
            "curves": curves,
            "summary": summary,
            "peak_rss_mb": round(peak_rss_mb(), 1),
        },
    )


if __name__ == "__main__":
    main()
