import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.stats import chisquare

from kerinci_xr.cube import build_cube, open_cube
from kerinci_xr.errors import InvalidInputError
from kerinci_xr.legend import Legend, read_legend
from kerinci_xr.sampling import (
    SPLITS,
    read_manifest,
    sample_centres,
    split_layout,
    write_manifest,
)

from .conftest import grid_map


def _mem_cube(labels, valid=None, legend=None):
    """A small in-memory cube (numpy-backed) on a projected grid."""
    h, w = labels.shape
    valid = np.ones((h, w), bool) if valid is None else valid
    n = int(labels.max())
    legend = legend or Legend(
        values=range(1, n + 1), labels=[f"c{i}" for i in range(1, n + 1)], palette=["00FF00"] * n
    )
    ds = xr.Dataset({"labels": grid_map(labels.astype(np.uint8)), "valid": grid_map(valid)})
    ds.attrs["legend"] = legend.to_json()
    return ds


def _windows_ok(cube, m, patch, max_invalid=0):
    valid = cube["valid"].values
    h, w = valid.shape
    for r in m.itertuples():
        assert r.row_stop - r.row_start == patch == r.col_stop - r.col_start
        assert r.row_start >= 0
        assert r.col_start >= 0
        assert r.row_stop <= h
        assert r.col_stop <= w
        assert r.row - r.row_start == patch // 2
        assert (~valid[r.row_start : r.row_stop, r.col_start : r.col_stop]).sum() <= max_invalid


def test_sample_centres__exact_count_border_nodata(cube_path):
    cube = open_cube(cube_path)
    with pytest.warns(UserWarning, match="fewer eligible centres"):  # rare classes in small splits
        m = sample_centres(cube, per_class=5, patch=32, seed=1, block=80)
    labels = cube["labels"].values
    assert (labels[m["row"], m["col"]] == m["class_id"]).all()
    _windows_ok(cube, m, 32)
    counts = m.groupby(["split", "class_id"]).size()
    assert counts.max() == 5
    train = counts.loc["train"]
    assert (train == 5).sum() >= 5  # the common classes get exactly per_class
    assert set(m.columns) >= {"patch_id", "class_name", "code", "x", "y", "split", "seed"}
    assert (m["patch_id"] == np.arange(len(m))).all()


def test_sample_centres__max_nodata_allows_some_invalid(cube_path):
    cube = open_cube(cube_path)
    with pytest.warns(UserWarning):
        strict = sample_centres(cube, per_class=50, patch=32, seed=0, block=80)
        loose = sample_centres(cube, per_class=50, patch=32, seed=0, block=80, max_nodata=0.25)
    _windows_ok(cube, strict, 32, max_invalid=0)
    _windows_ok(cube, loose, 32, max_invalid=int(0.25 * 32 * 32))
    valid = cube["valid"].values
    invalid = [(~valid[r.row_start : r.row_stop, r.col_start : r.col_stop]).sum() for r in loose.itertuples()]
    assert max(invalid) > 0  # the allowance was used: some windows cross nodata
    assert len(loose) >= len(strict)


def test_sample_centres__rare_class_warning_names_it():
    labels = np.ones((60, 60), np.uint8)
    labels[30, 30] = 2  # one pixel of class 2
    with pytest.warns(
        UserWarning, match=r"train split: fewer eligible centres than per_class=4 for class 2 'c2' \(1\)"
    ):
        m = sample_centres(_mem_cube(labels), per_class=4, patch=8, fractions=(1, 0, 0))
    assert (m["class_id"] == 2).sum() == 1
    assert (m["class_id"] == 1).sum() == 4


@pytest.mark.slow  # a statistical or quality check; the module is covered end to end without it
def test_sample_centres__draw_is_uniform_chi_square():
    """Over many seeds every eligible pixel of a class is drawn equally often."""
    labels = np.ones((24, 24), np.uint8)
    labels[6:14, 5:15] = 2  # 80 pixels of class 2, all eligible for 8 x 8 windows
    cube = _mem_cube(labels)
    hits = np.zeros((24, 24), int)
    draws = 600
    for seed in range(draws):
        m = sample_centres(cube, per_class=4, patch=8, seed=seed, fractions=(1, 0, 0))
        c2 = m[m["class_id"] == 2]
        assert len(c2) == 4
        assert not c2.duplicated(["row", "col"]).any()
        np.add.at(hits, (c2["row"], c2["col"]), 1)
    observed = hits[6:14, 5:15].ravel()
    assert observed.sum() == 4 * draws
    assert hits.sum() == observed.sum()
    _, p = chisquare(observed)
    assert p > 0.001


def test_split_layout__fractions_and_bad_input():
    lay = split_layout((1000, 1000), block=100, fractions=(0.6, 0.2, 0.2), seed=3)
    assert lay.fractions() == {"train": 0.6, "val": 0.2, "test": 0.2}
    again = split_layout((1000, 1000), block=100, fractions=(0.6, 0.2, 0.2), seed=3)
    assert (lay.blocks == again.blocks).all()
    for bad in ((0.5, 0.2, 0.2), (0.7, 0.4, -0.1), (0, 0.5, 0.5), (1.0,)):
        with pytest.raises(InvalidInputError, match="summing to 1"):
            split_layout((100, 100), block=10, fractions=bad)


def test_sample_centres__no_pixel_shared_between_splits(cube_path):
    cube = open_cube(cube_path)
    with pytest.warns(UserWarning):
        m = sample_centres(cube, per_class=30, patch=32, seed=5, block=64)
    cover = {s: np.zeros((cube.sizes["y"], cube.sizes["x"]), bool) for s in ("train", "val", "test")}
    for r in m.itertuples():
        cover[r.split][r.row_start : r.row_stop, r.col_start : r.col_stop] = True
    assert cover["train"].any()
    assert cover["val"].any() or cover["test"].any()
    assert not (cover["train"] & cover["val"]).any()
    assert not (cover["train"] & cover["test"]).any()
    assert not (cover["val"] & cover["test"]).any()


@pytest.mark.xdist_group("cluster")
def test_sample_centres__same_for_two_chunkings_and_a_cluster(cube_path, cluster):
    from distributed import Client

    kw = {"per_class": 6, "patch": 32, "seed": 9, "block": 80}
    with pytest.warns(UserWarning):
        a = sample_centres(open_cube(cube_path), **kw)
        b = sample_centres(open_cube(cube_path, chunks={"y": 100, "x": 77}), **kw)
    pd.testing.assert_frame_equal(a, b)
    with Client(cluster), pytest.warns(UserWarning):
        c = sample_centres(open_cube(cube_path), **kw)
    pd.testing.assert_frame_equal(a, c)
    with pytest.warns(UserWarning):
        d = sample_centres(open_cube(cube_path), **{**kw, "seed": 10})
    assert not a[["row", "col"]].equals(d[["row", "col"]])


def test_sample_centres__real_nc_pair_every_class_rare_warned(nc_paths):
    legend = read_legend(nc_paths["legend"])
    cube = build_cube(nc_paths["image"], nc_paths["labels"], legend=legend, scale=1 / 255, chunks=128)
    with pytest.warns(UserWarning) as record:
        m = sample_centres(cube, per_class=20, patch=64, seed=0, block=128)
    assert set(m["class_id"]) == set(range(1, 8))
    assert any("'sediment'" in str(w.message) for w in record)
    _windows_ok(cube.compute(), m, 64)


def test_manifest__csv_and_parquet_round_trip(tmp_path):
    labels = np.ones((40, 40), np.uint8)
    labels[20:, :] = 2
    m = sample_centres(_mem_cube(labels), per_class=3, patch=8, fractions=(1, 0, 0))
    for name in ("m.csv", "m.parquet"):
        back = read_manifest(write_manifest(m, tmp_path / name))
        pd.testing.assert_frame_equal(back, m, check_dtype=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patch": 128}, "does not fit"),
        ({"per_class": 0}, "per_class: expected an integer >= 1"),
        ({"fractions": (0.5, 0.3, 0.3)}, "summing to 1"),
        ({"max_nodata": 2.0}, "max_nodata"),
    ],
)
def test_sample_centres__bad_input(kwargs, message):
    labels = np.ones((60, 60), np.uint8)
    with pytest.raises(InvalidInputError, match=message):
        sample_centres(_mem_cube(labels), **{"patch": 8, **kwargs})


def test_sample_centres__empty_class_set():
    labels = np.zeros((40, 40), np.uint8)
    legend = Legend(values=(1,), labels=("a",), palette=("000000",))
    with pytest.raises(InvalidInputError, match="no eligible patch centre"):
        sample_centres(_mem_cube(labels, legend=legend), patch=8)


def _usable_blocks(labels, valid, patch, block, k):
    """Blocks holding a pixel of class k whose window lies in the block, all valid (brute force)."""
    h, w = labels.shape
    half = patch // 2
    ye = np.linspace(0, h, -(-h // block) + 1).round().astype(int)
    xe = np.linspace(0, w, -(-w // block) + 1).round().astype(int)
    found = set()
    for r, c in zip(*np.nonzero(labels == k), strict=True):
        r0, c0 = r - half, c - half
        bi, bj = np.searchsorted(ye, r, side="right") - 1, np.searchsorted(xe, c, side="right") - 1
        inside = ye[bi] <= r0 and r0 + patch <= ye[bi + 1] and xe[bj] <= c0 and c0 + patch <= xe[bj + 1]
        if inside and valid[r0 : r0 + patch, c0 : c0 + patch].all():
            found.add((bi, bj))
    return len(found)


@pytest.fixture(scope="module")
def nc_sparse_cube(nc_paths, tmp_path_factory):
    """60 points per class drawn from the real NC label map, as a GeoPackage, prepared into a cube."""
    import geopandas as gpd
    import rasterio

    with rasterio.open(nc_paths["labels"]) as src:
        lab, tr, crs = src.read(1), src.transform, src.crs
    rng = np.random.default_rng(0)
    rows, cols, codes = [], [], []
    for k in range(1, 8):
        r, c = np.nonzero(lab == k)
        i = rng.choice(len(r), size=min(60, len(r)), replace=False)
        rows += r[i].tolist()
        cols += c[i].tolist()
        codes += [k] * len(i)
    xs, ys = rasterio.transform.xy(tr, rows, cols)
    path = tmp_path_factory.mktemp("sparse") / "points.gpkg"
    gpd.GeoDataFrame({"lc": codes}, geometry=gpd.points_from_xy(xs, ys), crs=crs).to_file(path)
    legend = read_legend(nc_paths["legend"])
    return build_cube(nc_paths["image"], path, legend=legend, scale=1 / 255, chunks=128).compute()


def test_sparse_labels__every_split_gets_every_class_that_can_reach_it(nc_sparse_cube):
    from kerinci_xr.sampling import draw_centres

    cube, patch, block = nc_sparse_cube, 32, 64
    lab, valid = cube["labels"].values, cube["valid"].values
    assert (lab > 0).mean() < 0.01  # sparse: a few hundred labelled pixels
    reachable = [k for k in range(1, 8) if _usable_blocks(lab, valid, patch, block, k) >= 3]
    assert len(reachable) >= 4

    def missing(draw):
        got = draw.manifest.groupby(["class_id", "split"]).size()
        return [(k, s) for k in reachable for s in ("train", "val", "test") if (k, s) not in got.index]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(3):
            draw = draw_centres(cube, per_class=20, patch=patch, seed=seed, block=block)
            assert missing(draw) == [], (seed, draw.table)
            _windows_ok(cube, draw.manifest, patch)
            # the table says where a class cannot reach a split, and why
            t = draw.table.set_index("class_id")
            for k in set(range(1, 8)) - set(reachable):
                assert t.loc[k, "note"] != "" or (t.loc[k, [f"patches_{s}" for s in SPLITS]] > 0).all()
            np.testing.assert_array_equal(
                t[[f"patches_{s}" for s in SPLITS]].sum(1).values,
                draw.manifest.groupby("class_id").size().reindex(t.index, fill_value=0).values,
            )
        # blocks drawn by area alone leave a reachable class out of a split (what stratifying fixes)
        assert any(
            missing(draw_centres(cube, per_class=20, patch=patch, seed=s, block=block, stratify=False))
            for s in range(3)
        )


def test_split_of__scattered_pixels_agree_with_the_split_map():
    lay = split_layout((300, 250), block=64, fractions=(0.6, 0.2, 0.2), seed=2)
    full = lay.split_map(slice(0, 300), slice(0, 250))
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 300, 500), rng.integers(0, 250, 500)
    np.testing.assert_array_equal(lay.split_of(rows, cols), full[rows, cols])
    assert set(np.unique(full)) == {0, 1, 2}
