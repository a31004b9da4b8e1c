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
    for m in ("overall_accuracy", "kappa", "macro_f1", "mean_iou"):
        vals = [f[m] for f in report["folds"]]
        assert report["summary"][m]["mean"] == pytest.approx(statistics.mean(vals), abs=1e-6)
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
