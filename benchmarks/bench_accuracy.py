"""Which model for these labels: the U-Net (both presets) against per-pixel LightGBM and random
forest (with and without neighbourhood features), on identical spatial folds of real data.

Every real labelled dataset in ../shared/data, and sparse points on the generated scene:

- ``nc_points``: the North Carolina Landsat 7 scene (6 bands, 8-bit DN) with ``--points`` labelled
  points per class drawn (seeded) from its landclass96 map, prepared as vector labels;
- ``l8_polygons``: the Landsat 8 L1 scene of ``landsat8_tiled/`` (B2, B3, B4 DN) with its 4 real
  land-cover polygons (too few to test every class in every fold: the flags say which);
- ``generated_points``: ``--points`` points per class drawn from the generated Kerinci-like
  scene's truth (1000 x 1000 pixels, 8 Landsat bands);
- ``nc_dense`` (``--dense``): the NC scene with the wall-to-wall map.

The ladder, on each dataset: ``crossval --models unet,lightgbm,rf`` twice with the same folds and
seed, once with the wall-to-wall U-Net preset and per-pixel models on the bands (and indices), once
with the sparse preset and neighbourhood means and deviations over 3, 7 and 15 pixels for the
per-pixel models. Every model is scored on the same test pixels (checked); per model the pooled OA
over all test pixels, the mean over unflagged folds with its 95 % interval, the paired bootstrap
difference against the best per-pixel model (pooled OA), the mean time to train per fold, and,
for the generated scene, the time to predict a 4000 x 4000 cube (write the prediction store).
Target: the model ``crossval`` names is at least as accurate (pooled OA) as the best per-pixel
model, or not worse by a clear margin (the interval of the difference reaches 0).

    python benchmarks/bench_accuracy.py [--epochs 30] [--points 300] [--folds 4] [--dense]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HERE, RESULTS, WORK, peak_rss_mb, save, scene

DATA = HERE.parent.parent / "shared" / "data"
NC = DATA / "nc_landsat7"
L8 = DATA / "landsat8_tiled"
#: the two crossval runs of the ladder: (U-Net preset, per-pixel neighbourhoods, suffix)
RUNS = (("wall-to-wall", (), ""), ("sparse", (3, 7, 15), "_nbhd"))


def _points_file(out: Path, labels: Path, per_class: int, seed: int) -> Path:
    """Points drawn from a label raster, ``per_class`` per class (seeded), as a GeoPackage."""
    import geopandas as gpd
    import rasterio

    with rasterio.open(labels) as src:
        lab, tr, crs = src.read(1), src.transform, src.crs
    rng = np.random.default_rng(seed)
    rows, cols, codes = [], [], []
    for k in np.unique(lab[lab > 0]):
        r, c = np.nonzero(lab == k)
        i = rng.choice(len(r), size=min(per_class, len(r)), replace=False)
        rows += r[i].tolist()
        cols += c[i].tolist()
        codes += [int(k)] * len(i)
    xs, ys = rasterio.transform.xy(tr, rows, cols)
    gpd.GeoDataFrame({"lc": codes}, geometry=gpd.points_from_xy(xs, ys), crs=crs).to_file(out)
    return out


def _l8_legend(out: Path) -> Path:
    from kerinci_xr.legend import Legend

    Legend(
        values=[1, 2, 3, 4],
        labels=["crop", "developed", "tree", "water"],
        palette=["FFFF00", "FF0000", "006400", "0000FF"],
    ).write(out)
    return out


def _points_cube(work: Path, image: Path, labels: Path, legend: Path, args, **prepare_kw) -> Path:
    """A cube of ``image`` with ``--points`` points per class drawn from a label raster."""
    from kerinci_xr.api import prepare

    pts = _points_file(work / "points.gpkg", labels, args.points, args.seed)
    return prepare(image, labels=pts, legend=legend, out=work / "cube.zarr", overwrite=True, **prepare_kw)[
        "cube"
    ]


def nc_points(args, work: Path) -> tuple[Path, dict]:
    cube = _points_cube(
        work,
        NC / "nc_landsat7_2000_6band_dn.tif",
        NC / "nc_landclass96_labels.tif",
        NC / "nc_lc.json",
        args,
        scale=1 / 255,
        chunk=256,
    )
    return cube, {"patch": 32, "block": 64, "indices": ("ndvi", "ndwi", "nbr")}


def l8_polygons(args, work: Path) -> tuple[Path, dict]:
    from kerinci_xr.api import prepare

    cube = prepare(
        L8 / "LC08_L1TP_224078_20200518_20200518_01_RT.TIF",
        labels=L8 / "LC08_L1TP_224078_20200518_20200518_01_RT_polygons.gpkg",
        label_field="name",
        legend=_l8_legend(work / "lc.json"),
        bands=("B2", "B3", "B4"),
        scale=1e-4,
        chunk=512,
        out=work / "cube.zarr",
        overwrite=True,
    )["cube"]
    # 4 polygons of 80-210 pixels: 8-pixel windows in 12-pixel blocks (no red edge for indices),
    # folds of whole polygons (block folds cut them: the test pixels' neighbours train the model)
    return cube, {"patch": 8, "block": 12, "indices": (), "group_by": "feature"}


def generated_points(args, work: Path) -> tuple[Path, dict]:
    folder = scene(1000, seed=3)
    cube = _points_cube(
        work,
        folder / "Landsat_Kerinci_2023_v1.tif",
        folder / "LC_Image_v1.tif",
        folder / "lc.json",
        args,
        chunk=500,
    )
    return cube, {"patch": 32, "block": 64, "indices": ("ndvi", "ndwi", "nbr")}


def nc_dense(args, work: Path) -> tuple[Path, dict]:
    from kerinci_xr.api import prepare

    cube = prepare(
        NC / "nc_landsat7_2000_6band_dn.tif",
        labels=NC / "nc_landclass96_labels.tif",
        legend=NC / "nc_lc.json",
        scale=1 / 255,
        chunk=256,
        out=work / "cube.zarr",
        overwrite=True,
    )["cube"]
    return cube, {"patch": 64, "block": 128, "indices": ("ndvi", "ndwi", "nbr"), "per_class": 60}


def _ladder(name: str, cube: Path, kw: dict, args, work: Path) -> dict:
    """The two crossval runs on the same folds; every model's figures on the same test pixels."""
    import pandas as pd

    from kerinci_xr.api import crossval
    from kerinci_xr.comparison import mean_interval, paired_difference, pooled_report
    from kerinci_xr.cube import cube_legend, open_cube

    legend = cube_legend(open_cube(cube))
    samples: dict[str, list] = {}
    rows: dict[str, list[dict]] = {}
    refs = keys = None
    flagged: list[int] = []
    recommended = {}
    for preset, windows, suffix in RUNS:
        out = work / f"cv_{preset}"
        out.parent.mkdir(parents=True, exist_ok=True)
        if not (args.reuse and (out / "crossval.json").exists()):  # --reuse: read folds run already
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # rare classes in small folds
                crossval(
                    cube,
                    out=out,
                    folds=args.folds,
                    patch=kw["patch"],
                    block=kw["block"],
                    per_class=kw.get("per_class", args.per_class),
                    epochs=args.epochs,
                    preset=preset,
                    models=("unet", "lightgbm", "rf"),
                    indices=kw["indices"],
                    windows=windows,
                    group_by=kw.get("group_by", "block"),
                    seed=args.seed,
                    device=args.device,
                    overwrite=True,
                )
        report = json.loads((out / "crossval.json").read_text())
        flagged = report["models"]["unet"]["folds_flagged"]
        recommended[preset] = report["recommendation"]
        tables = [
            pd.read_parquet(out / f"fold{i}" / "test_samples.parquet") for i in range(1, args.folds + 1)
        ]
        got_keys = [t[["row", "col"]].to_numpy() for t in tables]
        if keys is None:
            keys, refs = got_keys, [t["reference"].to_numpy() for t in tables]
        elif not all(np.array_equal(a, b) for a, b in zip(keys, got_keys, strict=True)):
            raise SystemExit(f"{name}: the two crossval runs tested different pixels")
        for model in ("unet", "lightgbm", "rf"):
            entry = f"unet_{preset}" if model == "unet" else model + suffix
            samples[entry] = [t[model].to_numpy() for t in tables]
            rows[entry] = [r for r in report["folds"] if r["model"] == model]
    models = {}
    for entry, preds in samples.items():
        pooled = pooled_report(refs, preds, legend, seed=args.seed)
        kept = [r for r in rows[entry] if not r["flags"]]
        models[entry] = {
            "pooled_oa": pooled["overall_accuracy"],
            "pooled_oa_ci95": pooled["ci95"].get("overall_accuracy"),
            "pooled_macro_f1": pooled["macro_f1"],
            "pooled_kappa": pooled["kappa"],
            "fold_oa": mean_interval([r["overall_accuracy"] for r in kept]),
            "train_s_per_fold": round(float(np.mean([r["train_s"] for r in rows[entry]])), 1),
        }
    pixel = [m for m in models if not m.startswith("unet")]
    best_pixel = max(pixel, key=lambda m: models[m]["pooled_oa"])
    for entry in models:
        if entry != best_pixel:
            models[entry]["minus_best_pixel"] = paired_difference(
                refs, samples[entry], samples[best_pixel], seed=args.seed
            )
    return {
        "dataset": name,
        "test_samples": int(sum(len(r) for r in refs)),
        "folds": args.folds,
        "folds_flagged": flagged,
        "best_pixel_model": best_pixel,
        "labelled_pixels": report["labelled_pixels"],
        "on_nodata": report["on_nodata"],
        "group_by": report["group_by"],
        "features_split": report.get("features_split"),
        "recommended": recommended,
        "models": models,
    }


def _predict_times(work: Path, args) -> dict:
    """Seconds to predict a ``--predict-size`` generated cube (prediction store on disk) with each
    of the generated dataset's fold-1 models (the same 8 bands), and the implied seconds for
    4000 x 4000 pixels (prediction time grows with the pixels)."""
    from kerinci_xr.api import predict, prepare

    size = args.predict_size
    big = WORK / f"acc_cube_{size}.zarr"
    if not (big / "zarr.json").exists() and not (big / ".zattrs").exists():
        folder = scene(size)
        prepare(
            folder / "Landsat_Kerinci_2023_v1.tif",
            legend=folder / "lc.json",
            chunk=1000,
            out=big,
            overwrite=True,
        )
    times = {}
    for preset, _, suffix in RUNS:
        fold = work / f"cv_{preset}" / "fold1"
        for entry, ckpt in (
            (f"unet_{preset}", "model.pt"),
            ("lightgbm" + suffix, "lightgbm.pt"),
            ("rf" + suffix, "rf.pt"),
        ):
            t0 = time.perf_counter()
            predict(big, model=fold / ckpt, out=work / "pred.zarr", device=args.device, overwrite=True)
            secs = time.perf_counter() - t0
            times[entry] = {
                "size": size,
                "seconds": round(secs, 1),
                "at_4000": round(secs * (4000 / size) ** 2),
            }
            print(
                f"predict {size}^2 {entry}: {secs:.1f} s (4000^2: about {times[entry]['at_4000']} s)",
                flush=True,
            )
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--points", type=int, default=300, help="reference points per class")
    ap.add_argument("--per-class", type=int, default=300, help="patches per class and split")
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--more-seeds",
        type=lambda t: [int(x) for x in t.split(",")],
        default=[],
        help="also run the ladder with these seeds (e.g. 1,2) and report the spread of pooled OA",
    )
    ap.add_argument("--only", choices=("nc_points", "l8_polygons", "generated_points", "nc_dense"))
    ap.add_argument("--dense", action="store_true", help="also the wall-to-wall NC case")
    ap.add_argument("--no-predict", action="store_true", help="skip the prediction times")
    ap.add_argument(
        "--predict-size", type=int, default=4000, help="edge of the cube the prediction is timed on"
    )
    ap.add_argument("--reuse", action="store_true", help="read crossval folders this benchmark wrote already")
    args = ap.parse_args()
    if not NC.exists() or not L8.exists():
        raise SystemExit(f"{DATA} is absent: this benchmark needs ../shared/data")
    cases = [l8_polygons, nc_points, generated_points] + ([nc_dense] if args.dense else [])
    if args.only:
        cases = [c for c in (l8_polygons, nc_points, generated_points, nc_dense) if c.__name__ == args.only]
    results = []
    for case in cases:
        work = WORK / f"acc_{case.__name__}"
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        cube, kw = case(args, work)
        result = _ladder(case.__name__, cube, kw, args, work)
        if args.more_seeds:  # the same ladder with other seeds (training, folds): the spread a user will see
            runs = [result] + [
                _ladder(
                    case.__name__, cube, kw, argparse.Namespace(**vars(args) | {"seed": s}), work / f"seed{s}"
                )
                for s in args.more_seeds
            ]
            result["seeds"] = {
                entry: {
                    "seeds": [args.seed, *args.more_seeds],
                    "pooled_oa": [r["models"][entry]["pooled_oa"] for r in runs],
                    "mean": round(float(np.mean([r["models"][entry]["pooled_oa"] for r in runs])), 4),
                    "sd": round(float(np.std([r["models"][entry]["pooled_oa"] for r in runs], ddof=1)), 4),
                }
                for entry in result["models"]
            }
        result["seconds"] = round(time.perf_counter() - t0, 1)
        if case is generated_points and not args.no_predict:
            result["predict_s"] = _predict_times(work, args)
        results.append(result)
        _print(result)
        _save(results, args)  # after each dataset: a long run keeps what it measured


def _save(results: list[dict], args) -> None:
    """Save (with ``--only``: beside the other datasets' latest rows) and print the checks."""
    saved = RESULTS / "bench_accuracy.json"
    if args.only and saved.exists():
        done = {r["dataset"] for r in results}
        earlier = json.loads(saved.read_text()).get("rows", [])
        for r in results:  # what this run did not measure (--no-predict, no --more-seeds) is kept
            old = next((e for e in earlier if e["dataset"] == r["dataset"]), {})
            r |= {k: old[k] for k in ("predict_s", "seeds") if k in old and k not in r}
        results = [r for r in earlier if r["dataset"] not in done] + results
    checks = {}
    for r in results:
        for (
            preset,
            _,
            suffix,
        ) in RUNS:  # the model each crossval run names, against the ladder's best per-pixel model
            chosen = r["recommended"][preset]["model"]
            entry = f"unet_{preset}" if chosen == "unet" else chosen + suffix
            d = r["models"][entry].get("minus_best_pixel", {"estimate": 0.0, "ci95": [0.0, 0.0]})
            checks[f"{r['dataset']}_{preset}_run_names_{entry}_minus_best_pixel_oa"] = {
                "value": round(d["estimate"], 4),
                "target": ">= 0 or interval reaching 0",
                "pass": d["estimate"] >= 0 or d["ci95"][1] >= 0,
            }
    for k, v in checks.items():
        print(f"{k:<60} {v['value']:>7}  target {v['target']}  {'PASS' if v['pass'] else 'FAIL'}")
    save(
        "bench_accuracy",
        {"rows": results, "checks": checks, "peak_rss_mb": peak_rss_mb(), "args": vars(args)},
    )


def _print(r: dict) -> None:
    print(
        f"\n{r['dataset']}: {r['test_samples']:,} test pixels of {r['labelled_pixels']:,} labelled "
        f"({r['on_nodata']:,} on image nodata), {r['folds']} folds, flagged {r['folds_flagged']}"
    )
    head = ("model", "pooled OA", "macro F1", "fold OA (95 % CI)", "vs best pixel", "train s")
    print("{:<18} {:>9} {:>8} {:>26} {:>24} {:>8}".format(*head))
    for entry, m in r["models"].items():
        f = m["fold_oa"]
        ci = f"{f['mean']:.3f} [{f['ci95'][0]:.3f},{f['ci95'][1]:.3f}]" if f["ci95"] else str(f["mean"])
        d = m.get("minus_best_pixel")
        dd = f"{d['estimate']:+.3f} [{d['ci95'][0]:+.3f},{d['ci95'][1]:+.3f}]" if d else "(best pixel)"
        cells = (entry, m["pooled_oa"], m["pooled_macro_f1"], ci, dd, m["train_s_per_fold"])
        print("{:<18} {:>9.3f} {:>8.3f} {:>26} {:>24} {:>8}".format(*cells))


if __name__ == "__main__":
    main()
