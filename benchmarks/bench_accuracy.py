"""Accuracy on the real North Carolina scene: U-Net vs a per-pixel random forest.

Landsat 7 (6 bands, 8-bit DN) and the landclass96 map from ../shared/data/nc_landsat7/.
Spatial blocks are held out for testing; both models learn from the same training pixels (the
valid labelled pixels of the training patches) and are scored on every labelled pixel of the
test blocks. Target: the U-Net matches or beats the random forest on mean IoU.

    python benchmarks/bench_accuracy.py [--epochs 60] [--seed 0]
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

NC = HERE.parent.parent / "shared" / "data" / "nc_landsat7"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    if not NC.exists():
        raise SystemExit(f"{NC} is absent: this benchmark needs ../shared/data")
    import zarr
    from sklearn.ensemble import RandomForestClassifier

    from kerinci_xr.api import prepare, sample
    from kerinci_xr.cube import cube_legend, open_cube
    from kerinci_xr.metrics import accuracy_report, confusion_matrix, evaluate_prediction, format_report
    from kerinci_xr.patches import stored_layout
    from kerinci_xr.prediction import predict_scene
    from kerinci_xr.training import TrainConfig, fit

    work = WORK / "nc"
    work.mkdir(parents=True, exist_ok=True)
    cube_path = prepare(
        NC / "nc_landsat7_2000_6band_dn.tif",
        labels=NC / "nc_landclass96_labels.tif",
        legend=NC / "nc_lc.json",
        scale=1 / 255,
        chunk=256,
        out=work / "cube.zarr",
        overwrite=True,
    )["cube"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = sample(
            cube_path,
            out=work / "patches.zarr",
            per_class=args.per_class,
            patch=args.patch,
            seed=args.seed,
            block=2 * args.patch,
            fractions=(0.6, 0.2, 0.2),
            overwrite=True,
        )["patches"]
    cube = open_cube(cube_path)
    legend = cube_legend(cube)
    layout = stored_layout(store, (cube.sizes["y"], cube.sizes["x"]))
    t0 = time.perf_counter()
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
    fit(store, work / "unet.pt", config=cfg, overwrite=True)
    unet_s = time.perf_counter() - t0
    pred = predict_scene(cube, work / "unet.pt", chunk=512, device=args.device)["classes"]
    unet = evaluate_prediction(pred, cube["labels"], legend, layout=layout)["test"]
    # random forest on the same training pixels
    g = zarr.open_group(str(store), mode="r")
    train = np.asarray(g["split"][:], dtype=object) == "train"
    img, lab, ok = g["image"][:][train], g["labels"][:][train], g["valid"][:][train]
    sel = ok & (lab > 0)
    x_train = np.moveaxis(img, 1, -1)[sel]
    y_train = lab[sel]
    t0 = time.perf_counter()
    rf = RandomForestClassifier(n_estimators=300, n_jobs=-1, random_state=args.seed, min_samples_leaf=2)
    rf.fit(x_train, y_train)
    rf_s = time.perf_counter() - t0
    full = cube["image"].values
    valid = cube["valid"].values
    rf_map = np.zeros(valid.shape, np.uint8)
    rf_map[valid] = rf.predict(np.moveaxis(full, 0, -1)[valid])
    smap = layout.split_map(slice(0, valid.shape[0]), slice(0, valid.shape[1]))
    test_labels = np.where(smap == 2, cube["labels"].values, 0)
    rf_rep = accuracy_report(confusion_matrix(test_labels, rf_map, legend.n_classes), legend)
    print("U-Net on the test blocks\n" + format_report(unet))
    print("\nRandom forest on the test blocks\n" + format_report(rf_rep))
    table = {
        "unet": {k: unet[k] for k in ("overall_accuracy", "kappa", "mean_iou", "pixels")}
        | {"train_s": unet_s},
        "random_forest": {k: rf_rep[k] for k in ("overall_accuracy", "kappa", "mean_iou", "pixels")}
        | {"train_s": rf_s},
    }
    print(f"\n{'model':<15} {'OA':>6} {'kappa':>6} {'mIoU':>6} {'train s':>8}")
    for name, r in table.items():
        print(
            f"{name:<15} {r['overall_accuracy']:>6.3f} {r['kappa']:>6.3f} {r['mean_iou']:>6.3f} "
            f"{r['train_s']:>8.1f}"
        )
    ok = table["unet"]["mean_iou"] >= table["random_forest"]["mean_iou"]
    print(f"U-Net mIoU >= random forest mIoU: {'PASS' if ok else 'FAIL'}")
    save(
        "bench_accuracy",
        {
            "table": table,
            "train_pixels": int(sel.sum()),
            "test_pixels": unet["pixels"],
            "pass": ok,
            "peak_rss_mb": peak_rss_mb(),
            "epochs": args.epochs,
            "per_class_unet": unet["classes"],
            "per_class_rf": rf_rep["classes"],
        },
    )


if __name__ == "__main__":
    main()
