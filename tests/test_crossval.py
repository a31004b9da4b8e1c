"""Spatial k-fold cross-validation: folds partition the blocks, each fold trains and tests."""

from __future__ import annotations

import json
import statistics
import warnings
from pathlib import Path

import numpy as np
import pytest

from kerinci_xr.api import crossval, prepare
from kerinci_xr.errors import InvalidInputError, OutputExistsError
from kerinci_xr.legend import read_legend
from kerinci_xr.patches import manifest_of, open_patches, stored_layout
from kerinci_xr.sampling import fold_layouts


def test_fold_layouts__every_block_tested_once_and_classes_spread():
    rng = np.random.default_rng(1)
    counts = np.zeros((30, 4), dtype=np.int64)
    counts[:, 1] = rng.integers(50, 100, 30)  # a common class everywhere
    counts[[3, 11, 19, 27], 2] = 5  # a rare class in four blocks
    layouts = fold_layouts(counts, (500, 600), block=100, folds=4, seed=0)
    test = np.stack([lay.blocks == 2 for lay in layouts])
    val = np.stack([lay.blocks == 1 for lay in layouts])
    assert (test.sum(0) == 1).all()
    assert (val.sum(0) == 1).all()  # each block tested once, validated once
    rare = test.reshape(4, -1)[:, [3, 11, 19, 27]]
    assert (rare.sum(1) == 1).all()  # the rare class is in every fold's test area
    share = [counts[test[i].ravel(), 1].sum() / counts[:, 1].sum() for i in range(4)]
    assert max(share) - min(share) < 0.1
    with pytest.raises(InvalidInputError, match="folds: expected an integer >= 3"):
        fold_layouts(counts, (500, 600), block=100, folds=2)


def test_crossval__trains_and_tests_each_fold(small_scene, tmp_path):
    cube = prepare(
        small_scene.landsat,
        labels=small_scene.labels,
        legend=small_scene.legend,
        chunk=64,
        out=tmp_path / "cube.zarr",
    )["cube"]
    kw = dict(folds=3, patch=32, per_class=4, block=64, epochs=2, depth=2, base=8, batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rare classes in small folds
        out = crossval(cube, out=tmp_path / "cv", **kw)
    report = json.loads((tmp_path / "cv" / "crossval.json").read_text())
    assert [f["fold"] for f in report["folds"]] == [1, 2, 3]
    kept = [f for f in report["folds"] if not f["flags"]]  # flagged folds stay out of the means
    for m in ("overall_accuracy", "kappa", "macro_f1", "mean_iou"):
        vals = [f[m] for f in kept]
        assert report["summary"][m]["folds"] == len(vals)
        if vals:
            assert report["summary"][m]["mean"] == pytest.approx(statistics.mean(vals), abs=1e-6)
        if len(vals) > 1:
            assert report["summary"][m]["std"] == pytest.approx(statistics.stdev(vals), abs=1e-6)
    tested = np.zeros((5, 5), int)
    for i in (1, 2, 3):
        store = tmp_path / "cv" / f"fold{i}" / "patches.zarr"
        layout = stored_layout(store, (320, 300))
        tested += layout.blocks == 2
        m = manifest_of(open_patches(store))
        test = m[m["split"] == "test"]
        assert len(test) == report["folds"][i - 1]["test_patches"] > 0
        for r in test.itertuples():  # test windows lie in the fold's test blocks
            assert (
                layout.split_map(slice(r.row_start, r.row_stop), slice(r.col_start, r.col_stop)) == 2
            ).all()
        assert (tmp_path / "cv" / f"fold{i}" / "model.pt").exists()
    assert (tested == 1).all()
    assert Path(out["crossval"]) == tmp_path / "cv"
    with pytest.raises(OutputExistsError):
        crossval(cube, out=tmp_path / "cv", **kw)


def test_crossval__models_on_identical_folds_flags_and_a_paired_difference(small_run, tmp_path):
    import pandas as pd
    from sklearn.metrics import accuracy_score

    kw = dict(folds=3, patch=32, per_class=4, block=64, epochs=1, depth=2, base=8, batch_size=8, rounds=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rare classes in small folds
        report = crossval(
            str(small_run["cube"]),
            out=tmp_path / "cv",
            models=("unet", "lightgbm"),
            min_test_samples=30,
            **kw,
        )["report"]
    table = pd.read_csv(tmp_path / "cv" / "crossval.csv")
    folds = [pd.read_parquet(tmp_path / "cv" / f"fold{i}" / "test_samples.parquet") for i in (1, 2, 3)]
    present = sorted(set().union(*(set(f["reference"]) for f in folds)))
    for i, f in enumerate(folds, start=1):
        rows = table[table["fold"] == i].set_index("model")
        assert rows.loc["unet", "test_samples"] == rows.loc["lightgbm", "test_samples"] == len(f)
        assert not f.duplicated(["row", "col"]).any()  # each test pixel once
        for model in ("unet", "lightgbm"):
            assert rows.loc[model, "overall_accuracy"] == pytest.approx(
                accuracy_score(f["reference"], f[model])
            )
        counts = f["reference"].value_counts()
        flagged = any(counts.get(k, 0) < 30 for k in present)
        assert bool(isinstance(rows.loc["unet", "flags"], str) and rows.loc["unet", "flags"]) == flagged
    for model in ("unet", "lightgbm"):
        kept = table[(table["model"] == model) & table["flags"].isna()]
        assert report["models"][model]["summary"]["overall_accuracy"]["folds"] == len(kept)
    # the paired difference, recomputed from the per-sample predictions
    hits = [
        (f["unet"] == f["reference"]).to_numpy(int) - (f["lightgbm"] == f["reference"]).to_numpy(int)
        for f in folds
    ]
    total = sum(h.size for h in hits)
    d = next(x for x in report["differences"] if x["a"] == "unet" and x["b"] == "lightgbm")
    assert d["estimate"] == pytest.approx(sum(h.sum() for h in hits) / total, abs=1e-6)
    rng = np.random.default_rng(0)
    boot = np.zeros(2000)
    for h in hits:
        boot += np.array([h[rng.integers(0, h.size, h.size)].sum() for _ in range(2000)])
    assert d["ci95"] == pytest.approx(list(np.percentile(boot / total, [2.5, 97.5])), abs=1e-6)
    assert report["recommendation"]["model"] in ("unet", "lightgbm")


def test_mean_interval__the_t_interval_and_fold_flags():
    from scipy import stats

    from kerinci_xr.comparison import fold_flags, mean_interval

    vals = [0.81, 0.74, None, 0.9, 0.66]
    got = mean_interval(vals)
    v = [x for x in vals if x is not None]
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert got["folds"] == 4
    assert got["ci95"] == pytest.approx([lo, hi], abs=1e-6)
    assert mean_interval([0.5])["ci95"] is None
    ref = np.array([1, 1, 1, 3, 3, 3, 3], dtype=np.uint8)
    assert fold_flags(ref, [1, 2, 3], 4) == ["class 2 not in the test area", "class 1: 3 test samples (< 4)"]
    assert fold_flags(ref, [1, 3], 3) == []


def test_crossval__every_valid_label_scored_once_nodata_counted_untrained_class_flagged(
    small_scene, tmp_path
):
    """Sparse labels (every 6th pixel of the generated truth), labels on every nodata pixel,
    and one class only on the top rows, where no training window can hold it."""
    import pandas as pd
    import rasterio

    from kerinci_xr.api import predict
    from kerinci_xr.legend import read_legend
    from kerinci_xr.prediction import open_prediction

    with rasterio.open(small_scene.labels) as src:
        truth, profile = src.read(1), src.profile
    with rasterio.open(small_scene.landsat) as src:
        img, nodata = src.read(), src.nodata
    missing = (img == nodata).any(0)
    assert missing.any() and (missing == (img == nodata).all(0)).all()  # whole pixels are nodata
    sparse = np.zeros_like(truth)
    sparse[::6, ::6] = truth[::6, ::6]
    sparse[missing] = truth[missing]
    sparse[sparse == 3000] = 0
    sparse[0:2, 10:290:4] = 3000  # within 16 rows of the edge: no 32-pixel window holds them
    cube = _cube_with_labels(small_scene, sparse, profile, tmp_path)
    kw = dict(folds=3, patch=32, per_class=6, block=64, epochs=1, depth=2, base=8, batch_size=8, rounds=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rare classes in small folds
        report = crossval(cube, out=tmp_path / "cv", models=("unet", "lightgbm"), **kw)["report"]
    tables = [pd.read_parquet(tmp_path / "cv" / f"fold{i}" / "test_samples.parquet") for i in (1, 2, 3)]
    scored = pd.concat(tables)
    want = np.argwhere((sparse > 0) & ~missing)
    got = scored[["row", "col"]].sort_values(["row", "col"]).to_numpy()
    np.testing.assert_array_equal(got, want)  # every valid label once, nothing else
    assert report["labelled_pixels"] == int((sparse > 0).sum())
    assert report["on_nodata"] == int(((sparse > 0) & missing).sum()) > 0
    assert report["scored"] == len(want)
    untrained = read_legend(small_scene.legend).id_of(3000)
    for i, t in enumerate(tables, start=1):
        row = next(r for r in report["folds"] if r["fold"] == i and r["model"] == "unet")
        flagged = f"class {untrained} tested, not in the training windows" in row["flags"]
        assert flagged == (untrained in set(t["reference"]))
    assert any(untrained in set(t["reference"]) for t in tables)
    # the pooled figures, recomputed with sklearn from every fold's test pixels
    from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score

    for model in ("unet", "lightgbm"):
        pooled = report["models"][model]["pooled"]
        ref, pred = scored["reference"], scored[model]
        assert pooled["overall_accuracy"] == pytest.approx(accuracy_score(ref, pred), abs=1e-4)
        assert pooled["kappa"] == pytest.approx(cohen_kappa_score(ref, pred), abs=1e-4)
        present = sorted(set(ref))  # macro F1 over the classes with reference samples
        assert pooled["macro_f1"] == pytest.approx(
            f1_score(ref, pred, labels=present, average="macro"), abs=1e-4
        )
        lo, hi = pooled["ci95"]["overall_accuracy"]
        assert lo <= pooled["overall_accuracy"] <= hi
        assert (hi > lo) == (0 < pooled["overall_accuracy"] < 1)  # a bootstrap of right and wrong pixels
    # the U-Net is scored on the map predict makes with the fold's model
    pred = predict(cube, model=tmp_path / "cv" / "fold1" / "model.pt", out=tmp_path / "p.zarr")["prediction"]
    classes = open_prediction(pred)["classes"].values
    t = tables[0]
    np.testing.assert_array_equal(t["unet"].to_numpy(), classes[t["row"], t["col"]])


def test_crossval__group_by_feature_keeps_each_polygon_in_one_fold(small_scene, tmp_path):
    """Squares of 14 x 14 pixels labelled with the generated truth's class at their centre, and
    thin strips of a class of their own along the top edge: with block folds some squares straddle
    two test areas; grouped by feature none does, and a fold's test polygons lend no label to its
    training windows. Every fold's flags (a class missing, too few test pixels, a class tested but
    never trained) and the pooled figures are recomputed here from the test pixels."""
    import geopandas as gpd
    import pandas as pd
    import rasterio
    import rasterio.features
    from shapely.geometry import box

    from kerinci_xr.patches import open_patches

    with rasterio.open(small_scene.labels) as src:
        truth, tr, crs, shape = src.read(1), src.transform, src.crs, src.shape
    squares, codes = [], []
    for r in range(20, shape[0] - 20, 23):
        for c in range(20, shape[1] - 20, 23):
            x0, y0 = tr * (c, r)
            x1, y1 = tr * (c + 14, r + 14)
            squares.append(box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
            codes.append(int(truth[r + 7, c + 7]))
    codes = [c if c != 3000 else 2001 for c in codes]  # 3000 is the strips' class alone
    for c in range(10, shape[1] - 30, 60):  # rows 0-1: no 16-pixel window holds them
        x0, y0 = tr * (c, 0)
        x1, y1 = tr * (c + 20, 2)
        squares.append(box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
        codes.append(3000)
    gpd.GeoDataFrame({"lc": codes}, geometry=squares, crs=crs).to_file(tmp_path / "squares.gpkg")
    fid = rasterio.features.rasterize(
        [(g, i + 1) for i, g in enumerate(squares)], out_shape=shape, transform=tr, dtype="int32"
    )  # computed here, independently of the cube's reference_id
    cube = prepare(
        small_scene.landsat,
        labels=tmp_path / "squares.gpkg",
        label_field="lc",
        legend=small_scene.legend,
        chunk=64,
        out=tmp_path / "cube.zarr",
    )["cube"]
    kw = dict(folds=3, patch=16, per_class=6, block=48, rounds=10, models=("lightgbm",), min_test_samples=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rare classes in small folds
        by_block = crossval(cube, out=tmp_path / "cv_block", **kw)["report"]
        grouped = crossval(cube, out=tmp_path / "cv_feature", group_by="feature", **kw)["report"]
    for report, name in ((by_block, "cv_block"), (grouped, "cv_feature")):  # squares in 2+ test areas
        folds_of = {}
        for i in (1, 2, 3):
            t = pd.read_parquet(tmp_path / name / f"fold{i}" / "test_samples.parquet")
            for f in np.unique(fid[t["row"], t["col"]]):
                folds_of.setdefault(int(f), set()).add(i)
        assert report["features_split"] == sum(len(v) > 1 for v in folds_of.values())
    assert by_block["features_split"] > 0  # the block layout cuts some squares
    _check_flags_and_pooled(
        grouped, tmp_path / "cv_feature", strips=read_legend(small_scene.legend).id_of(3000)
    )
    tables = [
        pd.read_parquet(tmp_path / "cv_feature" / f"fold{i}" / "test_samples.parquet") for i in (1, 2, 3)
    ]
    owner, nodata = {}, _nodata(small_scene.landsat)
    for i, t in enumerate(tables, start=1):
        for f in np.unique(fid[t["row"], t["col"]]):
            assert owner.setdefault(int(f), i) == i  # each square in one fold only
        whole = np.isin(fid, np.unique(fid[t["row"], t["col"]])) & (fid > 0)
        got = np.zeros_like(whole)
        got[t["row"], t["col"]] = True
        assert (got == (whole & ~nodata)).all()  # every valid pixel of its squares, nothing else
        store = open_patches(tmp_path / "cv_feature" / f"fold{i}" / "patches.zarr")
        train = np.flatnonzero(np.asarray(store["split"].values, dtype=object) == "train")
        for k in train:
            r0, c0 = int(store["row_start"].values[k]), int(store["col_start"].values[k])
            lab = store["labels"].values[k]
            hidden = whole[r0 : r0 + lab.shape[0], c0 : c0 + lab.shape[1]]
            assert (lab[hidden] == 0).all()  # no label of a test square in a training window
    assert sum(len(t) for t in tables) == grouped["scored"]


def _check_flags_and_pooled(report, folder, *, strips):
    """Each fold's flags and the pooled figures, recomputed from the test pixels with sklearn."""
    import pandas as pd
    from sklearn.metrics import accuracy_score, cohen_kappa_score

    tables = {
        f["fold"]: pd.read_parquet(folder / f"fold{f['fold']}" / "test_samples.parquet")
        for f in report["folds"]
    }
    present = sorted(set().union(*(set(t["reference"]) for t in tables.values())))
    seen = {"missing": 0, "few": 0, "untrained": 0}
    for f in report["folds"]:
        counts = tables[f["fold"]]["reference"].value_counts()
        for k in present:
            missing, few = counts.get(k, 0) == 0, 0 < counts.get(k, 0) < 300
            assert (f"class {k} not in the test area" in f["flags"]) == missing
            assert (f"class {k}: {counts.get(k, 0)} test samples (< 300)" in f["flags"]) == few
            seen["missing"] += missing
            seen["few"] += few
        untrained = strips in counts.index  # the strips' class has no training window anywhere
        assert (f"class {strips} tested, not in the training windows" in f["flags"]) == untrained
        seen["untrained"] += untrained
    assert all(seen.values())  # the layout produced every kind of flag
    both = pd.concat(tables.values())
    pooled = report["models"]["lightgbm"]["pooled"]
    assert pooled["overall_accuracy"] == pytest.approx(
        accuracy_score(both["reference"], both["lightgbm"]), abs=1e-4
    )
    assert pooled["kappa"] == pytest.approx(cohen_kappa_score(both["reference"], both["lightgbm"]), abs=1e-4)


def _nodata(path):
    import rasterio

    with rasterio.open(path) as src:
        return (src.read() == src.nodata).any(0)


def test_crossval__default_windows_fit_the_scene_and_an_untestable_fold_is_flagged(small_scene, tmp_path):
    """No --patch: the window and block edges are chosen so that the scene holds 3 blocks per
    fold. Labels in two corners only: folds whose test area holds none are flagged, not trained."""
    import rasterio

    with rasterio.open(small_scene.labels) as src:
        truth, profile = src.read(1), src.profile
    corner = np.zeros_like(truth)
    corner[:60, :60] = truth[:60, :60]
    corner[-60:, -60:] = truth[-60:, -60:]
    cube = _cube_with_labels(small_scene, corner, profile, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rare classes in small folds
        report = crossval(cube, out=tmp_path / "cv", folds=4, models=("lightgbm",), rounds=10, per_class=4)[
            "report"
        ]
    patch, block = report["patch"], report["block"]
    assert block == 4 * patch and 16 <= patch <= 128
    assert -(-320 // block) * -(-300 // block) >= 3 * 4  # 3 blocks per fold
    assert patch == 16 or -(-320 // (8 * patch)) * -(-300 // (8 * patch)) < 12  # the largest that fits
    skipped = [f for f in report["folds"] if f["test_samples"] == 0]
    assert skipped  # 4 folds, labels in few blocks
    for f in skipped:
        assert f["flags"] in (
            "no labelled pixel in the test area: not trained",
            "no training window fits in the training area: not trained",
        )
        assert not (tmp_path / "cv" / f"fold{f['fold']}" / "lightgbm.pt").exists()
    tested = [f for f in report["folds"] if f["test_samples"]]
    assert tested and sum(f["test_samples"] for f in tested) == report["scored"]


def _cube_with_labels(scene, labels, profile, tmp_path):
    """A cube of the generated scene's imagery with these labels (KLHK codes) instead of its own."""
    import rasterio

    path = tmp_path / "labels.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(labels, 1)
    return prepare(scene.landsat, labels=path, legend=scene.legend, chunk=64, out=tmp_path / "cube.zarr")[
        "cube"
    ]
