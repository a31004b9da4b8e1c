"""Accuracy on real rasters: the U-Net vs a per-pixel random forest on the same training samples.

Three datasets from ../shared/data, each with spatially held-out test blocks:

- ``nc_points``: the North Carolina Landsat 7 scene (6 bands, 8-bit DN) with labelled points
  drawn from its landclass96 map (``--points`` per class, seeded), prepared as vector labels;
  scored per reference point in the test blocks (each point once);
- ``l8_polygons``: the Landsat 8 L1 scene of ``landsat8_tiled/`` (B2, B3, B4 DN) with its 4
  real land-cover polygons; scored on every polygon pixel in the test blocks (4 polygons are
  too few to score per polygon: the test blocks hold parts of them);
- ``nc_dense`` (``--dense``): the NC scene with the wall-to-wall map, every labelled test pixel.

Both models learn from the same samples: the labelled pixels of the training patches (each
scene pixel once), the random forest from their band values alone, the U-Net from the
patches around them. Both maps are scored on the same test samples: OA, kappa, macro F1 and
mean IoU, with the number of test samples. Target: the U-Net at least matches the random
forest (mean IoU) on every dataset.

    python benchmarks/bench_accuracy.py [--epochs 80] [--points 300] [--dense]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HERE, WORK, peak_rss_mb, save

DATA = HERE.parent.parent / "shared" / "data"
NC = DATA / "nc_landsat7"
L8 = DATA / "landsat8_tiled"
KEYS = ("overall_accuracy", "kappa", "macro_f1", "mean_iou", "samples")


def _points_file(out: Path, per_class: int, seed: int) -> Path:
    """Points drawn from the NC label map, ``per_class`` per class, as a GeoPackage."""
    import geopandas as gpd
    import rasterio

    with rasterio.open(NC / "nc_landclass96_labels.tif") as src:
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


def _train_pixels(store: Path) -> tuple[np.ndarray, np.ndarray]:
    """Band values and ids of the training patches' labelled pixels, each scene pixel once."""
    import zarr

    g = zarr.open_group(str(store), mode="r")
    train = np.flatnonzero(np.asarray(g["split"][:], dtype=object) == "train")
    r0, c0 = g["row_start"][:][train], g["col_start"][:][train]
    img, lab, ok = g["image"].get_orthogonal_selection((train,)), g["labels"][:][train], g["valid"][:][train]
    keys, xs, ys = [], [], []
    for i in range(len(train)):
        sel = ok[i] & (lab[i] > 0)
        rr, cc = np.nonzero(sel)
        keys.append((rr + r0[i]) * 1_000_000 + cc + c0[i])
        xs.append(img[i][:, sel].T)
        ys.append(lab[i][sel])
    key = np.concatenate(keys)
    _, first = np.unique(key, return_index=True)
    return np.concatenate(xs)[first], np.concatenate(ys)[first]


def _compare(
    name: str,
    cube_path: Path,
    *,
    patch: int,
    block: int,
    per_class: int,
    cfg,
    score,
    seed: int,
    fractions=(0.6, 0.2, 0.2),
) -> dict:
    """Sample, train both models on the same pixels, map the scene with both, score both."""
    from sklearn.ensemble import RandomForestClassifier

    from kerinci_xr.api import sample
    from kerinci_xr.cube import cube_legend, open_cube
    from kerinci_xr.patches import stored_layout
    from kerinci_xr.prediction import predict_scene
    from kerinci_xr.training import fit

    work = cube_path.parent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = sample(
            cube_path,
            out=work / "patches.zarr",
            per_class=per_class,
            patch=patch,
            seed=seed,
            block=block,
            fractions=fractions,
            overwrite=True,
        )["patches"]
    cube = open_cube(cube_path)
    legend = cube_legend(cube)
    layout = stored_layout(store, (cube.sizes["y"], cube.sizes["x"]))
    t0 = time.perf_counter()
    fit(store, work / "unet.pt", config=cfg, overwrite=True)
    unet_s = time.perf_counter() - t0
    unet_map = predict_scene(cube, work / "unet.pt", chunk=512, device=cfg.device)["classes"].compute()
    x_train, y_train = _train_pixels(store)
    t0 = time.perf_counter()
    rf = RandomForestClassifier(n_estimators=300, n_jobs=-1, random_state=seed, min_samples_leaf=1)
    rf.fit(x_train, y_train)
    rf_s = time.perf_counter() - t0
    valid = cube["valid"].values
    rf_map = np.zeros(valid.shape, np.uint8)
    rf_map[valid] = rf.predict(np.moveaxis(cube["image"].values, 0, -1)[valid])
    rf_map = unet_map.copy(data=rf_map)
    out = {"dataset": name, "train_pixels": len(y_train), "models": {}}
    for model, m, secs in (("unet", unet_map, unet_s), ("random_forest", rf_map, rf_s)):
        rep = score(m, cube, legend, layout)
        out["models"][model] = {k: rep[k] for k in KEYS} | {
            "sample_unit": rep["sample_unit"],
            "train_s": secs,
        }
    return out


def nc_points(args) -> dict:
    from kerinci_xr.api import prepare
    from kerinci_xr.metrics import evaluate_features, feature_table
    from kerinci_xr.training import TrainConfig

    work = WORK / "acc_nc_points"
    work.mkdir(parents=True, exist_ok=True)
    pts = _points_file(work / "points.gpkg", args.points, args.seed)
    cube = prepare(
        NC / "nc_landsat7_2000_6band_dn.tif",
        labels=pts,
        legend=NC / "nc_lc.json",
        scale=1 / 255,
        chunk=256,
        out=work / "cube.zarr",
        overwrite=True,
    )["cube"]

    def score(m, ds, legend, layout):
        return evaluate_features(
            m, feature_table(ds), legend, reference_id=ds["reference_id"], layout=layout
        )["test"]

    cfg = TrainConfig(
        epochs=args.epochs,
        depth=args.depth,
        base=args.base,
        batch_size=16,
        lr=args.lr,
        patience=args.epochs,
        seed=args.seed,
        device=args.device,
        class_weights="none",
        dropout=args.dropout,
    )
    return _compare(
        "nc_points", cube, patch=32, block=64, per_class=args.per_class, cfg=cfg, score=score, seed=args.seed
    )


def l8_polygons(args) -> dict:
    from kerinci_xr.api import prepare
    from kerinci_xr.metrics import evaluate_prediction
    from kerinci_xr.training import TrainConfig

    work = WORK / "acc_l8_polygons"
    work.mkdir(parents=True, exist_ok=True)
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

    def score(m, ds, legend, layout):
        return evaluate_prediction(m, ds["labels"], legend, layout=layout)["test"]

    cfg = TrainConfig(
        epochs=args.epochs,
        depth=2,
        base=args.base,
        batch_size=16,
        lr=args.lr,
        patience=args.epochs,
        seed=args.seed,
        device=args.device,
        class_weights="none",
        dropout=args.dropout,
    )
    # 4 polygons of 80-210 pixels: 8-pixel windows in 12-pixel blocks, half for training and half
    # for testing, no validation area (it would take the only block of a class)
    return _compare(
        "l8_polygons",
        cube,
        patch=8,
        block=12,
        per_class=args.per_class,
        cfg=cfg,
        score=score,
        seed=args.seed,
        fractions=(0.5, 0.0, 0.5),
    )


def nc_dense(args) -> dict:
    from kerinci_xr.api import prepare
    from kerinci_xr.metrics import evaluate_prediction
    from kerinci_xr.training import TrainConfig

    work = WORK / "acc_nc_dense"
    work.mkdir(parents=True, exist_ok=True)
    cube = prepare(
        NC / "nc_landsat7_2000_6band_dn.tif",
        labels=NC / "nc_landclass96_labels.tif",
        legend=NC / "nc_lc.json",
        scale=1 / 255,
        chunk=256,
        out=work / "cube.zarr",
        overwrite=True,
    )["cube"]

    def score(m, ds, legend, layout):
        return evaluate_prediction(m, ds["labels"], legend, layout=layout)["test"]

    cfg = TrainConfig(
        epochs=args.epochs,
        depth=3,
        base=32,
        batch_size=16,
        lr=3e-3,
        patience=15,
        seed=args.seed,
        device=args.device,
        dice=0.5,
    )
    return _compare("nc_dense", cube, patch=64, block=128, per_class=60, cfg=cfg, score=score, seed=args.seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--points", type=int, default=300, help="NC reference points per class")
    ap.add_argument("--per-class", type=int, default=300, help="patches per class and split (sparse data)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--depth", type=int, default=2, help="U-Net depth for the point data")
    ap.add_argument("--base", type=int, default=16, help="U-Net base channels for the point data")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--only", choices=("nc_points", "l8_polygons", "nc_dense"))
    ap.add_argument("--dense", action="store_true", help="also the wall-to-wall NC case")
    args = ap.parse_args()
    if not NC.exists() or not L8.exists():
        raise SystemExit(f"{DATA} is absent: this benchmark needs ../shared/data")
    cases = [nc_points, l8_polygons] + ([nc_dense] if args.dense else [])
    if args.only:
        cases = [c for c in (nc_points, l8_polygons, nc_dense) if c.__name__ == args.only]
    rows = [case(args) for case in cases]
    print(
        f"\n{'dataset':<12} {'model':<14} {'OA':>6} {'kappa':>6} {'macroF1':>7} {'mIoU':>6} "
        f"{'samples':>8}  unit"
    )
    checks = {}
    for r in rows:
        for model, m in r["models"].items():
            print(
                f"{r['dataset']:<12} {model:<14} {m['overall_accuracy']:>6.3f} {m['kappa']:>6.3f} "
                f"{m['macro_f1']:>7.3f} {m['mean_iou']:>6.3f} {m['samples']:>8,}  {m['sample_unit']}"
            )
        u, f = r["models"]["unet"]["mean_iou"], r["models"]["random_forest"]["mean_iou"]
        checks[f"{r['dataset']}_unet_minus_rf_miou"] = {
            "value": round(u - f, 4),
            "target": ">= 0",
            "pass": u >= f,
        }
    for k, v in checks.items():
        print(f"{k:<34} {v['value']:>7}  target {v['target']}  {'PASS' if v['pass'] else 'FAIL'}")
    save(
        "bench_accuracy",
        {"rows": rows, "checks": checks, "peak_rss_mb": peak_rss_mb(), "epochs": args.epochs},
    )


if __name__ == "__main__":
    main()
