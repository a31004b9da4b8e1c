"""Vector reference data: real points and polygons rasterised onto real and generated grids."""

from __future__ import annotations

import json
import math

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
import xarray as xr
from pyproj import Transformer

from kerinci_xr.api import prepare
from kerinci_xr.cube import build_cube
from kerinci_xr.errors import InvalidInputError
from kerinci_xr.legend import Legend, read_legend

from .conftest import grid_map, raise_if_dask_computes, shared_file
from .test_cli import _cli

L8 = ("landsat8_tiled", "LC08_L1TP_224078_20200518_20200518_01_RT.TIF")
L8_POLYGONS = ("landsat8_tiled", "LC08_L1TP_224078_20200518_20200518_01_RT_polygons.gpkg")


@pytest.fixture(scope="module")
def kerinci_points():
    return shared_file("kerinci", "Sample_LC_v1.geojson"), shared_file("kerinci", "lc.json")


@pytest.fixture(scope="module")
def point_scene(tmp_path_factory):
    from kerinci_xr.synthetic import make_kerinci_scene

    return make_kerinci_scene(tmp_path_factory.mktemp("pts"), height=700, width=600, seed=1, radar=False)


@pytest.fixture(scope="module")
def l8_legend(tmp_path_factory):
    path = tmp_path_factory.mktemp("l8") / "lc.json"
    Legend(
        values=[1, 2, 3, 4],
        labels=["crop", "developed", "tree", "water"],
        palette=["FFFF00", "FF0000", "006400", "0000FF"],
    ).write(path)
    return path


def _expected_pixels(xs, ys, transform, shape):
    """Row/col of each point by the affine inverse, independently of the toolkit (rasterio)."""
    rows, cols = rasterio.transform.rowcol(transform, xs, ys, op=math.floor)
    rows, cols = np.asarray(rows), np.asarray(cols)
    inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    return rows, cols, inside


def test_points__each_labels_the_pixel_that_contains_it(point_scene, kerinci_points, tmp_path):
    pts_path, legend_path = kerinci_points
    with pytest.warns(UserWarning, match="outside the grid"):
        cube = prepare(
            point_scene.landsat, labels=pts_path, legend=legend_path, chunk=128, out=tmp_path / "c.zarr"
        )["cube"]
    ds = xr.open_zarr(cube)
    with rasterio.open(point_scene.landsat) as src:
        transform, shape = src.transform, src.shape
    gdf = gpd.read_file(pts_path)
    rows, cols, inside = _expected_pixels(gdf.geometry.x.values, gdf.geometry.y.values, transform, shape)
    assert 100 < inside.sum() < len(gdf)
    legend = read_legend(legend_path)
    expected = np.zeros(shape, np.uint8)
    ids = np.array([legend.id_of(c) for c in gdf["lc"]])
    # no two points of different classes share a pixel here, so the expected map is unambiguous
    px = rows[inside] * shape[1] + cols[inside]
    assert len(np.unique(px)) == inside.sum()
    expected[rows[inside], cols[inside]] = ids[inside]
    np.testing.assert_array_equal(ds["labels"].values, expected)
    report = json.loads(ds.attrs["provenance"])["reference"]
    assert report["outside"] == int((~inside).sum())
    assert report["used"] == int(inside.sum())
    # the feature table: one row per point inside, its pixel and its file row
    t = ds["feature_source_index"].values
    np.testing.assert_array_equal(np.sort(t), np.flatnonzero(inside))
    np.testing.assert_array_equal(ds["feature_row"].values, rows[t])
    np.testing.assert_array_equal(ds["feature_col"].values, cols[t])
    np.testing.assert_array_equal(ds["feature_code"].values, gdf["lc"].values[t])
    rid = ds["reference_id"].values
    np.testing.assert_array_equal(rid[rows[t], cols[t]], ds["feature"].values)
    assert (rid > 0).sum() == inside.sum()

    # the same points in UTM 47S (a GeoPackage) label the same pixels
    tr = Transformer.from_crs(4326, 32747, always_xy=True)
    x, y = tr.transform(gdf.geometry.x.values, gdf.geometry.y.values)
    utm = gpd.GeoDataFrame({"lc": gdf["lc"]}, geometry=gpd.points_from_xy(x, y), crs=32747)
    utm.to_file(tmp_path / "pts_utm.gpkg")
    with pytest.warns(UserWarning):
        cube2 = prepare(
            point_scene.landsat,
            labels=tmp_path / "pts_utm.gpkg",
            legend=legend_path,
            chunk=256,
            out=tmp_path / "c2.zarr",
        )["cube"]
    np.testing.assert_array_equal(xr.open_zarr(cube2)["labels"].values, expected)


def test_points__geoparquet_and_shapefile_read_alike(point_scene, kerinci_points, tmp_path):
    pts_path, legend_path = kerinci_points
    gdf = gpd.read_file(pts_path).cx[101.15:101.35, -2.0:-1.8]
    gdf.to_parquet(tmp_path / "p.parquet")
    gdf.to_file(tmp_path / "p.shp")
    legend = read_legend(legend_path)
    got = []
    for f in ("p.parquet", "p.shp"):
        with pytest.warns(UserWarning, match="outside"):
            ds = build_cube(point_scene.landsat, tmp_path / f, legend=legend, chunks=200)
        got.append(ds["labels"].values)
    np.testing.assert_array_equal(got[0], got[1])
    assert (got[0] > 0).sum() > 50


def test_polygons__real_landsat8_counts_equal_one_piece_rasterize(l8_legend):
    image, polys = shared_file(*L8), shared_file(*L8_POLYGONS)
    legend = read_legend(l8_legend)
    with raise_if_dask_computes():
        chunked = build_cube(image, polys, legend=legend, label_field="name", chunks=64)
    one = build_cube(image, polys, legend=legend, label_field="name", chunks=4096)
    lab = chunked["labels"].values
    np.testing.assert_array_equal(lab, one["labels"].values)
    gdf = gpd.read_file(polys)
    with rasterio.open(image) as src:
        ref = rasterio.features.rasterize(
            zip(
                gdf.geometry,
                [legend.id_of(legend.values[legend.labels.index(n)]) for n in gdf["name"]],
                strict=True,
            ),
            out_shape=src.shape,
            transform=src.transform,
            fill=0,
            dtype="uint8",
        )
    counts = np.bincount(lab.ravel(), minlength=5)
    np.testing.assert_array_equal(counts, np.bincount(ref.ravel(), minlength=5))
    assert (counts[1:] > 50).all()
    # the polygons straddle chunk edges, so the chunked burn really was stitched
    rr, cc = np.nonzero(lab)
    assert len(set(zip((rr // 64).tolist(), (cc // 64).tolist(), strict=True))) > 4
    # every polygon's pixels carry its feature number
    rid = chunked["reference_id"].values
    np.testing.assert_array_equal((rid > 0), lab > 0)
    assert sorted(np.unique(rid[rid > 0])) == [1, 2, 3, 4]
    assert list(chunked["feature_kind"].values) == [1, 1, 1, 1]


def _grid(tmp_path, crs="EPSG:32621", size=40):
    """A tiny 2-band image: 10 m pixels, origin (1000, 2000)."""
    path = tmp_path / "img.tif"
    tr = rasterio.transform.from_origin(1000, 2000, 10, 10)
    with rasterio.open(
        path, "w", driver="GTiff", height=size, width=size, count=2, dtype="uint16", crs=crs, transform=tr
    ) as dst:
        dst.write(np.full((2, size, size), 500, np.uint16))
    return path


def test_overlapping_polygons__different_classes_left_unlabelled(tmp_path, l8_legend):
    img = _grid(tmp_path)
    a = shapely.box(1000, 1700, 1200, 1900)  # cols 0..19, rows 10..29
    b = shapely.box(1100, 1600, 1300, 1800)  # overlaps a in cols 10..19, rows 20..29
    c = shapely.box(1250, 1850, 1350, 1950)  # same class as d, overlapping it
    d = shapely.box(1300, 1900, 1390, 1990)
    gdf = gpd.GeoDataFrame({"name": ["crop", "water", "tree", "tree"]}, geometry=[a, b, c, d], crs=32621)
    gdf.to_file(tmp_path / "v.gpkg")
    ds = build_cube(img, tmp_path / "v.gpkg", legend=read_legend(l8_legend), label_field="name", chunks=16)
    lab = ds["labels"].values
    assert (lab[20:30, 10:20] == 0).all()  # the shared ground of crop and water
    assert (lab[10:20, 0:20] == 1).all()
    assert (lab[30:40, 10:30] == 4).all()
    assert (lab[5:10, 30:35] == 3).all()
    assert (lab == 3).sum() == 100 + 81 - 25  # tree over tree stays tree
    assert json.loads(ds["reference_id"].attrs["reference_report"])["conflicting_pairs"] == 1
    assert (ds["reference_id"].values[20:30, 10:20] == 0).all()


def test_multipoints_and_multipolygons(tmp_path, l8_legend):
    img = _grid(tmp_path)
    mp = shapely.MultiPoint([(1005, 1995), (1395, 1605)])  # pixels (0, 0) and (39, 39)
    mpoly = shapely.MultiPolygon([shapely.box(1100, 1900, 1120, 1920), shapely.box(1200, 1800, 1210, 1810)])
    gdf = gpd.GeoDataFrame({"lc": [2, 3]}, geometry=[mp, mpoly], crs=32621)
    gdf.to_file(tmp_path / "m.geojson")
    ds = build_cube(img, tmp_path / "m.geojson", legend=read_legend(l8_legend), chunks=16)
    lab = ds["labels"].values
    assert lab[0, 0] == 2
    assert lab[39, 39] == 2
    assert (lab[8:10, 10:12] == 3).all()
    assert lab[19, 20] == 3
    assert (lab > 0).sum() == 2 + 4 + 1


@pytest.mark.parametrize(
    "case, match",
    [
        ("no_field", r"expected a field 'lc'.*found the fields \['kind'\].*--label-field"),
        ("strings", r"neither class codes nor class names.*'forest'"),
        ("no_crs", r"declares no CRS.*ogr2ogr -a_srs"),
        ("outside", r"1 outside the grid: no feature is left.*Fix: pass reference data of this area"),
        ("lines", r"expected points or polygons.*LineString.*buffer"),
    ],
)
def test_bad_vector_input__clear_errors(tmp_path, l8_legend, case, match):
    img = _grid(tmp_path)
    p = shapely.Point(1105, 1895)
    if case == "no_field":
        gdf = gpd.GeoDataFrame({"kind": [1]}, geometry=[p], crs=32621)
    elif case == "strings":
        gdf = gpd.GeoDataFrame({"lc": ["forest"]}, geometry=[p], crs=32621)
    elif case == "no_crs":
        gdf = gpd.GeoDataFrame({"lc": [1]}, geometry=[p])
        pytest.importorskip("pyogrio")  # writes the file without a CRS (with a warning)
    elif case == "outside":
        gdf = gpd.GeoDataFrame({"lc": [1]}, geometry=[shapely.Point(9000, 9000)], crs=32621)
    else:
        gdf = gpd.GeoDataFrame(
            {"lc": [1]}, geometry=[shapely.LineString([(1000, 1000), (1100, 1100)])], crs=32621
        )
    gdf.to_file(tmp_path / "v.gpkg")
    out = tmp_path / "c.zarr"
    r = _cli(
        "prepare",
        "--image",
        str(img),
        "--labels",
        str(tmp_path / "v.gpkg"),
        "--legend",
        str(l8_legend),
        "--out",
        str(out),
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert __import__("re").search(match, r.stderr.replace("\n", " ")), r.stderr
    assert not out.exists()


def test_strict__features_outside_are_an_error(tmp_path, l8_legend):
    img = _grid(tmp_path)
    gdf = gpd.GeoDataFrame(
        {"lc": [1, 2]}, geometry=[shapely.Point(1105, 1895), shapely.Point(9e3, 9e3)], crs=32621
    )
    gdf.to_file(tmp_path / "v.gpkg")
    with pytest.raises(InvalidInputError, match=r"1 of 2 features used; 1 outside the grid.*--strict"):
        prepare(img, labels=tmp_path / "v.gpkg", legend=l8_legend, strict=True, out=tmp_path / "c.zarr")
    assert not (tmp_path / "c.zarr").exists()
    with pytest.warns(UserWarning, match="1 outside the grid"):
        prepare(img, labels=tmp_path / "v.gpkg", legend=l8_legend, out=tmp_path / "c.zarr")


def _class_map(tmp_path, legend_path, classes):
    """A class-map COG on the tiny grid (what predict writes), from a numpy array of ids."""
    from kerinci_xr.io import write_cog

    da_ = grid_map(classes.astype(np.uint8), crs=32621, res=10, origin=(1000, 2000))
    return write_cog(da_, tmp_path / "map.tif", legend=read_legend(legend_path))


def test_evaluate_reference__each_feature_counted_once(tmp_path, l8_legend):
    from sklearn.metrics import confusion_matrix as sk_cm

    rng = np.random.default_rng(4)
    classes = rng.integers(1, 5, size=(40, 40))
    classes[0:20, 0:20] = 1  # a big polygon of 400 pixels, 300 mapped as crop, 100 as water
    classes[0:5, 0:20] = 4
    classes[30:40, 21:29] = 0  # image nodata under some points: not counted, reported apart
    # 30 points (several in one pixel of the same class), the big polygon, a small one
    pts = rng.uniform([1210, 1600], [1290, 2000], size=(30, 2))  # beside the polygons (columns 21..28)
    pts[1] = pts[0]
    codes = rng.integers(1, 5, size=30)
    codes[1] = codes[0]
    big = shapely.box(1000, 1800, 1200, 2000)  # rows 0..19, cols 0..19
    small = shapely.box(1300, 1610, 1330, 1640)  # rows 36..38, cols 30..32
    gdf = gpd.GeoDataFrame(
        {"lc": [*codes.tolist(), 1, 3]},
        geometry=[*gpd.points_from_xy(pts[:, 0], pts[:, 1]), big, small],
        crs=32621,
    )
    gdf.to_file(tmp_path / "ref.gpkg")
    cog = _class_map(tmp_path, l8_legend, classes)
    out = tmp_path / "m.json"
    r = _cli("evaluate", str(cog), "--reference", str(tmp_path / "ref.gpkg"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())["all"]
    # independent: the map at each point's pixel; each polygon's majority by a one-piece rasterize
    tr = rasterio.transform.from_origin(1000, 2000, 10, 10)
    rows, cols = rasterio.transform.rowcol(tr, pts[:, 0], pts[:, 1], op=math.floor)
    pred = list(classes[rows, cols])
    for poly in (big, small):
        m = rasterio.features.rasterize([(poly, 1)], out_shape=(40, 40), transform=tr)
        pred.append(int(np.bincount(classes[m == 1], minlength=5).argmax()))
    ref = [*codes.tolist(), 1, 3]
    keep = np.asarray(pred) > 0
    dark = int((~keep).sum())
    assert 0 < dark < 30  # some points on nodata
    np.testing.assert_array_equal(
        np.asarray(rep["confusion_matrix"])[1:, 1:],
        sk_cm(np.asarray(ref)[keep], np.asarray(pred)[keep], labels=[1, 2, 3, 4]),
    )
    assert np.asarray(rep["confusion_matrix"])[:, 0].sum() == 0  # none scored as "no class"
    assert rep["samples"] == 32 - dark
    assert rep["sample_unit"] == "feature-majority"
    assert rep["features"] == {
        "counted": 32 - dark,
        "points": 30,
        "polygons": 2,
        "without_pixels": 0,
        "on_nodata": dark,
    }
    assert f"{32 - dark} independent samples" in r.stdout
    assert f"not counted: {dark} feature(s) where the map has no class (image nodata)" in r.stdout
    assert "rows = reference, columns = map" in r.stdout
    # every pixel of a polygon instead: 400 + 9 pixels and the 30 points
    r = _cli(
        "evaluate",
        str(cog),
        "--reference",
        str(tmp_path / "ref.gpkg"),
        "--polygon-rule",
        "pixels",
        "--out",
        str(tmp_path / "p.json"),
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "p.json").read_text())["all"]["samples"] == 30 - dark + 400 + 9
