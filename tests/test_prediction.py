import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
import xarray as xr
from pyproj import Geod

from kerinci_xr.api import predict
from kerinci_xr.checkpoint import load_checkpoint
from kerinci_xr.cli import main
from kerinci_xr.cube import open_cube
from kerinci_xr.errors import InputFileNotFoundError, InvalidInputError, OutputExistsError
from kerinci_xr.io import write_cog
from kerinci_xr.legend import Legend, read_legend
from kerinci_xr.metrics import class_areas
from kerinci_xr.prediction import predict_scene
from kerinci_xr.training import TrainConfig, fit

from .conftest import grid_map, raise_if_dask_computes, sampled_run
from .test_cube import gdal_georeference


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 360 x 330 scene, its cube, a patch store and a small trained U-Net (depth 2)."""
    root = tmp_path_factory.mktemp("predict")
    _, cube, store = sampled_run(root, height=360, width=330, seed=5, chunk=128, per_class=8)
    model = fit(store, root / "model.pt", config=TrainConfig(epochs=3, depth=2, base=8, batch_size=8))["best"]
    return {"root": root, "cube": cube, "store": store, "model": model}


def test_predict_scene__lazy_and_invariant_to_chunking(trained):
    cube = open_cube(trained["cube"])
    with raise_if_dask_computes():
        a = predict_scene(cube, trained["model"], chunk=64)
    assert a["classes"].dtype == np.uint8
    assert a["classes"].shape == (360, 330)
    assert a.rio.crs == cube.rio.crs
    assert a["classes"].chunks[0][0] == 64
    ca = a["classes"].values
    cb = predict_scene(open_cube(trained["cube"], chunks={"y": 100, "x": 70}), trained["model"], chunk=96)[
        "classes"
    ].values
    one = predict_scene(cube, trained["model"], chunk=1024)["classes"].values  # one piece
    np.testing.assert_array_equal(ca, cb)
    np.testing.assert_array_equal(ca, one)  # 0 pixels differ from the one-piece prediction
    valid = cube["valid"].values
    assert (ca[~valid] == 0).all()
    assert (ca[valid] > 0).all()
    conf = a["confidence"].values
    assert (conf[valid] > 0).all()
    assert (conf <= 1).all()


def test_predict_scene__windows_share_no_chunk_tasks(trained):
    """Each window reads its own region: no cube chunk is a task that windows wait on together.

    Shared chunk tasks would stay in memory until every window around them is done, which
    makes peak memory grow with the scene's width.
    """
    cube = open_cube(trained["cube"])
    pred = predict_scene(cube, trained["model"], chunk=64)
    graph = dict(pred["classes"].data.__dask_graph__())
    cube_keys = {k for v in ("image", "valid") for k in cube[v].data.__dask_graph__()}
    assert cube_keys
    assert not cube_keys & graph.keys()
    windows = [k for k in graph if str(k[0] if isinstance(k, tuple) else k).startswith("_predict_window")]
    assert len(windows) == 6 * 6  # 360 x 330 in 64-pixel chunks


def test_predict_scene__no_seams_along_chunk_borders(trained):
    cube = open_cube(trained["cube"])
    one = predict_scene(cube, trained["model"], chunk=1024)["confidence"].values
    tiled = predict_scene(cube, trained["model"], chunk=64)["confidence"].values
    border = np.zeros(one.shape, bool)
    border[63::64, :] = border[64::64, :] = True
    border[:, 63::64] = border[:, 64::64] = True
    diff = np.abs(one - tiled)
    assert diff[border].mean() <= diff[~border].mean() + 1e-7
    assert diff.max() < 1e-6


@pytest.mark.xdist_group("cluster")
def test_predict_scene__cluster_equals_threads(trained, tmp_path, cluster):
    from distributed import Client

    threads = predict_scene(open_cube(trained["cube"]), trained["model"], chunk=96)["classes"].values
    with Client(cluster):
        on_cluster = predict_scene(open_cube(trained["cube"]), trained["model"], chunk=96)["classes"].values
    np.testing.assert_array_equal(threads, on_cluster)


def test_predict__products_cog_areas_metrics(trained, tmp_path):
    out = predict(
        trained["cube"],
        model=trained["model"],
        out=tmp_path / "p.zarr",
        cog=tmp_path / "map.tif",
        areas=tmp_path / "areas.csv",
        metrics=tmp_path / "m.json",
        patches=trained["store"],
        chunk=128,
    )
    pred = xr.open_zarr(out["prediction"], decode_coords="all")
    cube = open_cube(trained["cube"])
    assert pred.rio.crs == cube.rio.crs
    for layer in ("classes", "confidence"):  # GDAL (QGIS) reads the prediction's georeference
        wkt, gt = gdal_georeference(out["prediction"], layer)
        assert "WGS 84" in wkt
        assert gt[0] == pytest.approx(cube.rio.transform().c)
    assert pred["classes"].attrs["flag_values"][1:] == list(range(1, 23))
    assert "class" not in pred
    legend = read_legend(trained["root"] / "scene" / "lc.json")
    with rasterio.open(out["cog"]) as src:
        assert src.crs == cube.rio.crs
        assert src.transform.almost_equals(cube.rio.transform())
        assert src.nodata == 0
        assert src.dtypes[0] == "uint8"
        assert src.compression.value == "DEFLATE"
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.block_shapes[0] == (512, 512) or src.block_shapes[0][0] >= 256
        cmap = src.colormap(1)
        assert cmap[1][:3] == tuple(legend.rgb[1])
        assert cmap[11][:3] == tuple(legend.rgb[11])
        np.testing.assert_array_equal(src.read(1), pred["classes"].values)
        assert json.loads(src.tags()["CLASS_NAMES"])[1] == "Primary dryland forest"
    cats = [c.text for c in ET.parse(str(out["cog"]) + ".aux.xml").iter("Category")]
    assert cats[0] == "nodata"
    assert cats[1:] == list(legend.names)
    assert out["cog_style"].read_text().count("<paletteEntry") == legend.n_classes
    import pandas as pd

    areas = pd.read_csv(out["areas"])
    assert areas["pixels_predicted"].sum() == int((pred["classes"].values > 0).sum())
    assert areas["pixels_labels"].sum() == int((cube["labels"].values > 0).sum())
    metrics = json.loads(out["scene_metrics"].read_text())
    assert {"all", "train", "val", "test"} <= set(metrics)
    assert (
        metrics["all"]["pixels"]
        == metrics["train"]["pixels"] + metrics["val"]["pixels"] + metrics["test"]["pixels"]
    )


def test_write_cog__overviews_by_mode_on_a_larger_map(tmp_path):
    legend = Legend(values=(1, 2), labels=("a", "b"), palette=("FF0000", "00FF00"))
    cls = np.ones((2048, 2048), np.uint8)
    cls[:, 1024:] = 2
    da_ = grid_map(cls, origin=(0, 0))
    path = write_cog(da_.chunk(512), tmp_path / "m.tif", legend=legend)
    with rasterio.open(path) as src:
        assert src.overviews(1) == [2, 4, 8]
        ov = src.read(1, out_shape=(256, 256))
        assert set(np.unique(ov)) == {1, 2}  # mode keeps categories
    with pytest.raises(OutputExistsError):
        write_cog(da_, path, legend=legend)


def test_write_cog__codes_with_qgis_style_and_attribute_table_no_gdal_warning(tmp_path, caplog):
    import shutil
    import subprocess

    from kerinci_xr.synthetic import KLHK_LEGEND as lg

    ids = (np.arange(1200 * 1100) % (lg.n_classes + 1)).reshape(1200, 1100).astype(np.uint8)  # 0 = nodata too
    da_ = grid_map(ids, origin=(0, 0))
    with caplog.at_level("WARNING"):
        path = write_cog(da_.chunk(512), tmp_path / "codes.tif", legend=lg, values="codes")
    assert not [r for r in caplog.records if "palette" in r.getMessage()]
    with rasterio.open(path) as src:
        data = src.read(1)
        assert src.dtypes[0] == "uint16"
        assert src.colormap(1)[2001][:3] == tuple(lg.rgb[1])
    assert set(np.unique(data)) <= {0, *lg.values}  # only legend codes (and nodata)
    np.testing.assert_array_equal(data, np.asarray([0, *lg.values])[ids])
    style = ET.parse(tmp_path / "codes.qml")
    entries = {e.get("value"): e.get("label") for e in style.iter("paletteEntry")}
    assert entries == {str(v): n for v, n in zip(lg.values, lg.names, strict=True)}
    assert style.find(".//rasterrenderer").get("type") == "paletted"
    if shutil.which("gdalinfo"):  # GDAL reads the attribute table beside the COG
        info = subprocess.run(["gdalinfo", str(path)], capture_output=True, text=True, check=True).stdout
        assert "<GDALRasterAttributeTable" in info
        assert "Primary dryland forest" in info
        assert "2001" in info


@pytest.mark.parametrize("lat", [0.0, 60.0])
def test_class_areas__epsg4326_matches_geodesic_area(lat):
    res = 0.01
    legend = Legend(values=(1, 2), labels=("a", "b"), palette=("FF0000", "00FF00"))
    h, w = 100, 80
    lab = np.ones((h, w), np.uint8)
    lab[:, 40:] = 2
    top = lat + h * res / 2
    da_ = grid_map(lab, crs=4326, res=res, origin=(10, top))
    table = class_areas(da_.chunk(32), legend)
    geod = Geod(ellps="WGS84")
    for cls, (x0, x1) in ((1, (10, 10.4)), (2, (10.4, 10.8))):
        area, _ = geod.polygon_area_perimeter([x0, x1, x1, x0], [top, top, top - h * res, top - h * res])
        got = table.loc[table["class_id"] == cls, "hectares"].item() * 1e4
        assert abs(got / abs(area) - 1) < 0.005


@pytest.mark.parametrize("lat", [0.0, 60.0])
def test_class_areas__web_mercator_on_the_ellipsoid(lat):
    """EPSG:3857 pixels: geodesic areas of their corners (pyproj.Geod), not the nominal 30 m x 30 m."""
    from pyproj import Transformer

    legend = Legend(values=(1, 2), labels=("a", "b"), palette=("FF0000", "00FF00"))
    to_merc = Transformer.from_crs(4326, 3857, always_xy=True)
    x0, top = to_merc.transform(10.0, lat + 0.2)
    res, h, w = 30.0, 600, 500
    lab = np.ones((h, w), np.uint8)
    lab[:, 250:] = 2
    da_ = grid_map(lab, crs=3857, res=res, origin=(x0, top))
    table = class_areas(da_.chunk(256), legend)
    to_geo, geod = Transformer.from_crs(3857, 4326, always_xy=True), Geod(ellps="WGS84")
    for cls, (c0, c1) in ((1, (0, 250)), (2, (250, 500))):
        xs, ys = [x0 + c0 * res, x0 + c1 * res], [top, top - h * res]
        corners = [
            to_geo.transform(x, y)
            for x, y in ((xs[0], ys[0]), (xs[1], ys[0]), (xs[1], ys[1]), (xs[0], ys[1]))
        ]
        area, _ = geod.polygon_area_perimeter([c[0] for c in corners], [c[1] for c in corners])
        got = table.loc[table["class_id"] == cls, "hectares"].item() * 1e4
        assert abs(got / abs(area) - 1) < 0.001, (got, area)
        nominal = 250 * h * res * res
        assert (
            (got / nominal < 0.27) if lat == 60 else abs(got / nominal - 1) < 0.01
        )  # 4 times too large before


def test_pixel_area__equal_area_is_nominal_and_utm_divides_by_its_scale_factor():
    from kerinci_xr.metrics import pixel_area_m2

    def grid(epsg, x0, y0):
        return grid_map(np.zeros((64, 64)), crs=epsg, origin=(x0, y0))

    assert pixel_area_m2(grid(6933, 1e6, 5e6)).ndim == 0  # EASE-Grid 2.0 preserves area
    utm = pixel_area_m2(grid(32748, 500_000 - 960, 9_700_000))  # on the central meridian, k0 = 0.9996
    np.testing.assert_allclose(utm.values.mean() / 900, 1 / 0.9996**2, rtol=1e-5)


def test_predict__bad_input(trained, tmp_path):
    cube = open_cube(trained["cube"])
    with pytest.raises(InvalidInputError, match=r"needs bands \['HH', 'HV'\]"):
        predict_scene(
            cube.sel(band=[b for b in cube["band"].values if b not in ("HH", "HV")]), trained["model"]
        )
    with pytest.raises(InputFileNotFoundError, match="model checkpoint not found"):
        predict_scene(cube, tmp_path / "missing.pt")
    (tmp_path / "p.zarr").mkdir()
    with pytest.raises(OutputExistsError):
        predict(trained["cube"], model=trained["model"], out=tmp_path / "x.zarr", cog=tmp_path / "p.zarr")
    assert not (tmp_path / "x.zarr").exists()
    assert list((tmp_path / "p.zarr").iterdir()) == []
    ckpt = load_checkpoint(trained["model"])
    assert ckpt["bands"][-1] == "HV"


def test_cli__predict_and_evaluate_prediction(trained, tmp_path, capsys):
    out = tmp_path / "p.zarr"
    rc = main(
        [
            "-q",
            "predict",
            str(trained["cube"]),
            "--model",
            str(trained["model"]),
            "--out",
            str(out),
            "--cog",
            str(tmp_path / "m.tif"),
            "--chunk",
            "128",
        ]
    )
    assert rc == 0
    assert out.exists()
    assert (tmp_path / "m.tif").exists()
    rc = main(
        [
            "-q",
            "evaluate",
            str(out),
            "--cube",
            str(trained["cube"]),
            "--patches",
            str(trained["store"]),
            "--out",
            str(tmp_path / "e.json"),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "== test ==" in text
    assert "overall accuracy" in text
    assert (
        main(
            [
                "-q",
                "predict",
                str(trained["cube"]),
                "--model",
                str(tmp_path / "nope.pt"),
                "--out",
                str(tmp_path / "q.zarr"),
            ]
        )
        == 2
    )
    assert "model checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "q.zarr").exists()


def test_predict_scene__sub_tiles_equal_a_plain_one_piece_forward(trained):
    """Sub-tiled NHWC windows give the classes of one plain forward pass over the whole scene."""
    import torch

    from kerinci_xr.checkpoint import band_stats_of, load_model, normalize
    from kerinci_xr.prediction import sub_tile

    cube = open_cube(trained["cube"])
    ckpt = load_checkpoint(trained["model"])
    x = cube["image"].sel(band=ckpt["bands"]).values.astype(np.float32)
    ok = cube["valid"].values
    normalize(x, ok, *band_stats_of(ckpt))
    model = load_model(ckpt)
    m = model.config.multiple
    h, w = ok.shape
    x = np.pad(x, ((0, 0), (0, -h % m), (0, -w % m)))
    with torch.no_grad():
        plain = model(torch.from_numpy(x[None]))[0, :, :h, :w].argmax(0).numpy() + 1
    plain = np.where(ok, plain, 0)
    assert sub_tile(2048, 112, 16, None) == 1024
    assert sub_tile(2048, 48, 8, None) == 416
    for tile, chunk in ((32, 128), (48, 1024), (None, 1024), (0, 96)):
        got = predict_scene(cube, trained["model"], chunk=chunk, tile=tile)["classes"].values
        np.testing.assert_array_equal(got, plain, err_msg=f"tile {tile}, chunk {chunk}")


def _warp_3857(src):
    """``src`` (an open rasterio dataset) reprojected to EPSG:3857 by nearest neighbour."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    transform, width, height = calculate_default_transform(
        src.crs, "EPSG:3857", src.width, src.height, *src.bounds
    )
    out = np.zeros((height, width), dtype=src.dtypes[0])
    reproject(
        rasterio.band(src, 1),
        out,
        dst_transform=transform,
        dst_crs="EPSG:3857",
        resampling=Resampling.nearest,
    )
    return out, transform


def _gdal_at_least(version: str, want: tuple[int, int, int]) -> bool:
    return tuple(int(p) for p in version.split(".")[:3]) >= want


def test_prediction_zarr__gdal_reads_x_as_longitude_and_warps_like_the_cog(small_run, tmp_path):
    """A GIS user opens the Zarr map with GDAL and warps it to Web Mercator: the pixels equal the
    COG's warped the same way. The GDAL that rasterio bundles reads the axes right; Debian's
    ``gdalwarp`` before 3.10.1 swaps them (OSGeo/gdal#11381), as the README says: when the system
    GDAL is upgraded this test checks its ``gdalwarp`` too."""
    import shutil
    import subprocess

    zarr_name = f'ZARR:"{small_run["prediction"]}":/classes'
    with rasterio.open(small_run["cog"]) as cog:
        want, want_transform = _warp_3857(cog)
        assert cog.crs.to_epsg() == 4326
        assert cog.bounds.left < cog.bounds.right  # longitudes along x
    if not _gdal_at_least(rasterio.__gdal_version__, (3, 10, 1)):
        pytest.skip(f"rasterio's GDAL {rasterio.__gdal_version__} has the Zarr axis bug")
    with rasterio.open(zarr_name) as zsrc:
        assert zsrc.crs.to_epsg() == 4326
        assert zsrc.transform.almost_equals(rasterio.open(small_run["cog"]).transform)
        got, got_transform = _warp_3857(zsrc)
    assert got_transform.almost_equals(want_transform)
    np.testing.assert_array_equal(got, want)  # the COG holds ids (the default --cog-values)
    assert (want > 0).mean() > 0.5

    if shutil.which("gdalinfo") is None:
        return
    cli = subprocess.run(["gdalinfo", "--version"], capture_output=True, text=True, check=True).stdout
    info = subprocess.run(["gdalinfo", zarr_name], capture_output=True, text=True, check=True).stdout
    mapping = next(line for line in info.splitlines() if "Data axis to CRS axis mapping" in line)
    if not _gdal_at_least(cli.split()[1].rstrip(","), (3, 10, 1)):
        assert mapping.endswith("1,2"), mapping  # swapped, as the README warns
        return
    assert mapping.endswith("2,1"), mapping  # EPSG:4326 is lat,lon: data x is CRS axis 2
    for name, src in (("zarr", zarr_name), ("cog", str(small_run["cog"]))):
        warp = ["gdalwarp", "-q", "-t_srs", "EPSG:3857", "-r", "near", src, str(tmp_path / f"{name}.tif")]
        subprocess.run(warp, check=True)
    with rasterio.open(tmp_path / "zarr.tif") as a, rasterio.open(tmp_path / "cog.tif") as b:
        assert a.transform.almost_equals(b.transform)
        np.testing.assert_array_equal(a.read(1), b.read(1))
