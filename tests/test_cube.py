import json

import dask.array as da
import numpy as np
import pytest
import rasterio
import zarr

from kerinci_xr.cube import build_cube, cube_legend, open_cube, write_cube
from kerinci_xr.errors import GridMismatchError, InvalidInputError, OutputExistsError
from kerinci_xr.io import open_raster
from kerinci_xr.legend import read_legend
from kerinci_xr.stages.info import cube_summary

from .conftest import raise_if_dask_computes, shared_file


@pytest.fixture(scope="module")
def nc_cube(nc_paths, tmp_path_factory):
    legend = read_legend(nc_paths["legend"])
    ds = build_cube(nc_paths["image"], nc_paths["labels"], legend=legend, scale=1 / 255, chunks=128)
    return write_cube(ds, tmp_path_factory.mktemp("nc") / "cube.zarr")


def test_build_cube__computes_nothing(small_scene):
    legend = read_legend(small_scene.legend)
    with raise_if_dask_computes():
        ds = build_cube(
            small_scene.landsat,
            small_scene.labels,
            legend=legend,
            radar=small_scene.palsar,
            chunks=64,
        )
    assert list(ds["band"].values) == ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9", "HH", "HV"]
    assert ds["image"].dtype == np.float32
    assert ds["labels"].dtype == np.uint8
    assert ds["image"].chunks == ((10,), (64,) * 5, (64,) * 4 + (44,))
    assert ds.rio.crs.to_epsg() == 4326
    assert json.loads(ds.attrs["band_roles"])["nir"] == "B5"


def test_build_cube__radar_aligned_and_in_db(small_scene):
    legend = read_legend(small_scene.legend)
    ds = build_cube(
        small_scene.landsat, small_scene.labels, legend=legend, radar=small_scene.palsar, chunks=64
    )
    hh = ds["image"].sel(band="HH").values
    hv = ds["image"].sel(band="HV").values
    ok = ds["valid"].values
    assert np.isfinite(hh[ok]).all()
    assert -30 < np.nanmean(hh) < 0
    assert np.nanmean(hv) < np.nanmean(hh)
    # forest backscatters more than open land (what the generator promises, seen after alignment)
    lab = ds["labels"].values
    forest = lab == legend.id_of(2001)
    open_land = np.isin(lab, [legend.id_of(c) for c in (20091, 20092, 3000)])
    assert open_land.sum() > 1000
    assert np.nanmean(hv[forest & ok]) > np.nanmean(hv[open_land & ok]) + 3


def test_write_cube__nc_class_counts_match_label_file(nc_cube, nc_paths):
    ds = open_cube(nc_cube)
    with rasterio.open(nc_paths["labels"]) as src:
        raw = src.read(1)
    legend = cube_legend(ds)
    summary = cube_summary(ds)
    got = {row["code"]: row["pixels"] for row in summary["classes"]}
    want = {c: int((raw == c).sum()) for c in legend.values}
    assert got == want
    assert got[7] == 194  # the rare "sediment" class survives
    assert summary["crs"] == "EPSG:32119"
    area = {row["code"]: row["hectares"] for row in summary["classes"]}
    # on the ellipsoid: the nominal 28.5 m pixel divided by the projection's areal scale (PROJ's factors)
    from pyproj import Proj, Transformer

    x, y = ds.rio.transform() * (ds.sizes["x"] / 2, ds.sizes["y"] / 2)
    lon, lat = Transformer.from_crs(32119, 4326, always_xy=True).transform(x, y)
    scale = Proj("EPSG:32119").get_factors(lon, lat).areal_scale
    assert area[7] == pytest.approx(194 * 28.5 * 28.5 / scale / 1e4, rel=1e-4)
    assert scale != pytest.approx(1, abs=1e-5)
    # invalid pixels: the nodata frame (any band 0)
    with rasterio.open(nc_paths["image"]) as src:
        img = src.read()
    np.testing.assert_array_equal(ds["valid"].values, (img != 0).all(axis=0))


def test_open_cube__round_trip_keeps_crs_transform_values(nc_cube, nc_paths):
    ds = open_cube(nc_cube)
    src = open_raster(nc_paths["image"])
    assert ds.rio.crs == src.rio.crs
    assert tuple(ds.rio.transform())[:6] == pytest.approx(tuple(src.rio.transform())[:6])
    assert isinstance(ds["image"].data, da.Array)
    assert ds["image"].chunks[1][0] == 128
    raw = src.values.astype(np.float64)
    ok = ds["valid"].values
    np.testing.assert_allclose(ds["image"].values[:, ok], raw[:, ok] / 255, rtol=1e-6)
    assert np.isnan(ds["image"].values[:, ~ok]).all()
    meta = zarr.open_group(str(nc_cube), mode="r")["image"].metadata.to_dict()
    assert meta["zarr_format"] == 2
    assert (nc_cube / ".zmetadata").exists()  # what GDAL 3.6 reads
    assert "blosc" in json.dumps(meta.get("compressor") or meta.get("compressors"))


def test_write_cube__existing_output_needs_overwrite(nc_cube, nc_paths):
    before = sorted(p.name for p in nc_cube.iterdir())
    ds = open_cube(nc_cube)
    with pytest.raises(OutputExistsError, match="output exists"):
        write_cube(ds, nc_cube)
    assert sorted(p.name for p in nc_cube.iterdir()) == before


def _boom(block, block_info=None):
    if block_info[0]["chunk-location"][1:] == (1, 1):
        raise RuntimeError("disk full (simulated)")
    return block


def test_write_cube__interrupted_write_keeps_previous_cube(tmp_path, small_scene):
    legend = read_legend(small_scene.legend)
    ds = build_cube(small_scene.landsat, small_scene.labels, legend=legend, chunks=64)
    path = write_cube(ds, tmp_path / "cube.zarr")
    before = open_cube(path)["image"].values
    broken = ds.copy()
    broken["image"] = ds["image"].copy(data=ds["image"].data.map_blocks(_boom, dtype=np.float32) * 2)
    with pytest.raises(RuntimeError, match="disk full"):
        write_cube(broken, path, overwrite=True)
    np.testing.assert_array_equal(open_cube(path)["image"].values, before)
    assert [p.name for p in tmp_path.iterdir()] == ["cube.zarr"]
    # and a good overwrite replaces it
    doubled = ds.copy()
    doubled["image"] = ds["image"] * 2
    write_cube(doubled, path, overwrite=True)
    np.testing.assert_allclose(open_cube(path)["image"].values, before * 2)
    assert [p.name for p in tmp_path.iterdir()] == ["cube.zarr"]


def test_build_cube__labels_on_another_grid(tmp_path, small_scene):
    legend = read_legend(small_scene.legend)
    # labels resampled onto the radar grid: another resolution and origin
    from kerinci_xr.io import align_to

    lab = open_raster(small_scene.labels).isel(band=0, drop=True)
    off = align_to(lab, open_raster(small_scene.palsar), resampling="nearest")
    off.rio.to_raster(tmp_path / "labels_off.tif")
    with pytest.raises(GridMismatchError, match=r"labels_off.tif: expected labels on the grid"):
        build_cube(small_scene.landsat, tmp_path / "labels_off.tif", legend=legend)
    ds = build_cube(small_scene.landsat, tmp_path / "labels_off.tif", legend=legend, align_labels=True)
    direct = build_cube(small_scene.landsat, small_scene.labels, legend=legend)
    agree = (ds["labels"].values == direct["labels"].values).mean()
    assert agree > 0.9  # two nearest-neighbour resamplings between 30 m and 25 m


def test_build_cube__real_landsat8_with_sentinel1_same_grid():
    img = shared_file("landsat_sar", "LC08_003069_20180906_clip.tif")
    s1 = shared_file("landsat_sar", "S1_2018_VV_VH_clip.tif")
    ds = build_cube(
        img,
        radar=s1,
        bands=["B2", "B3", "B4", "B5", "B6", "B7"],
        radar_bands=["VV", "VH", "VVVH"],
        radar_scale=1.0,
        scale=1e-4,
    )
    assert list(ds["band"].values)[-3:] == ["VV", "VH", "VVVH"]
    with rasterio.open(s1) as src:
        vv = src.read(1)
    np.testing.assert_allclose(ds["image"].sel(band="VV").values, vv, rtol=1e-6)
    assert json.loads(ds.attrs["band_roles"])["swir2"] == "B7"


@pytest.mark.xdist_group("cluster")
def test_write_cube__cluster_equals_threads(tmp_path, small_scene, cluster):
    from distributed import Client

    legend = read_legend(small_scene.legend)

    def build():
        return build_cube(
            small_scene.landsat,
            small_scene.labels,
            legend=legend,
            radar=small_scene.palsar,
            chunks=96,
        )

    a = write_cube(build(), tmp_path / "threads.zarr")
    with Client(cluster):
        b = write_cube(build(), tmp_path / "cluster.zarr")
    ta, tb = open_cube(a), open_cube(b)
    for name in ("image", "labels", "valid"):
        np.testing.assert_array_equal(ta[name].values, tb[name].values)


def gdal_georeference(path, layer):
    """CRS and geotransform as GDAL's Zarr driver reads them (``gdalinfo -json``)."""
    import shutil
    import subprocess

    if shutil.which("gdalinfo") is None:
        pytest.skip("gdalinfo (Debian's gdal-bin) is not installed")
    res = subprocess.run(
        ["gdalinfo", "-json", f'ZARR:"{path}":/{layer}'], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    assert "ERROR" not in res.stderr, res.stderr  # QGIS shows each one to the user
    info = json.loads(res.stdout)
    return info["coordinateSystem"]["wkt"], info["geoTransform"]


def test_write_cube__gdal_opens_every_layer_with_crs_and_geotransform(nc_cube):
    import warnings

    import pyproj
    import xarray as xr

    ds = open_cube(nc_cube)
    expect = tuple(ds.rio.transform())
    for layer in ("image:0", "image:5", "valid", "labels"):
        wkt, gt = gdal_georeference(nc_cube, layer)
        assert pyproj.CRS(wkt).equals(pyproj.CRS(ds.rio.crs.to_wkt()))
        assert gt == pytest.approx([expect[2], expect[0], expect[1], expect[5], expect[3], expect[4]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = xr.open_zarr(nc_cube)  # default arguments, no warning
    assert plain["labels"].attrs["flag_meanings"].split()[0] == "nodata"
    assert plain.attrs["Conventions"] == "CF-1.10"
    assert plain["labels"].attrs["grid_mapping"] == "spatial_ref"
    assert plain["valid"].attrs["long_name"].startswith("valid")
    assert plain["x"].attrs["standard_name"] == "projection_x_coordinate"
    assert "units" not in plain["valid"].attrs


def test_export__cog_with_band_descriptions_equal_to_the_cube(nc_cube, tmp_path, capsys):
    from kerinci_xr.cli import main

    out = tmp_path / "image.tif"
    assert main(["-q", "export", str(nc_cube), "--bands", "B4_nir,B5_swir1,B7_swir2", "--out", str(out)]) == 0
    ds = open_cube(nc_cube)
    with rasterio.open(out) as src:
        assert src.descriptions == ("B4_nir", "B5_swir1", "B7_swir2")
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.crs == ds.rio.crs
        assert src.transform.almost_equals(ds.rio.transform())
        expect = ds["image"].sel(band=["B4_nir", "B5_swir1", "B7_swir2"]).values
        np.testing.assert_array_equal(src.read(), expect)
    assert main(["-q", "export", str(nc_cube), "--out", str(tmp_path / "all.tif")]) == 0
    with rasterio.open(tmp_path / "all.tif") as src:
        assert list(src.descriptions) == [str(b) for b in ds["band"].values]
    assert main(["-q", "export", str(nc_cube), "--bands", "B9", "--out", str(tmp_path / "x.tif")]) == 2
    assert "bands ['B9'] are not in the cube" in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists()


def test_write_cube__zarr_format_3_on_request(nc_cube, tmp_path):
    import warnings

    ds = open_cube(nc_cube)
    path = write_cube(ds, tmp_path / "v3.zarr", zarr_format=3)
    assert zarr.open_group(str(path), mode="r")["image"].metadata.zarr_format == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = open_cube(path)
    np.testing.assert_array_equal(again["labels"].values, ds["labels"].values)


def _tif(path, arr, *, nodata=None, descriptions=None):
    from affine import Affine

    profile = dict(driver="GTiff", height=arr.shape[1], width=arr.shape[2], count=arr.shape[0])
    profile |= dict(dtype=arr.dtype, crs="EPSG:32748", transform=Affine(30, 0, 500000, 0, -30, 9800000))
    with rasterio.open(path, "w", nodata=nodata, **profile) as dst:
        dst.write(arr)
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
    return path


def test_prepare__cloud_masks_make_pixels_invalid(tmp_path):
    """An Fmask band inside the stack, and a Landsat C2 QA_PIXEL file (values from USGS's table:
    21824 clear land, 21952 clear water, 22280 high-confidence cloud, 23888 cloud shadow, 1 fill)."""
    from kerinci_xr.api import prepare

    rng = np.random.default_rng(2)
    refl = rng.integers(100, 4000, size=(3, 40, 50)).astype(np.uint16)
    refl[:, 0, 0] = 0  # image nodata
    fmask = rng.choice(np.array([0, 1, 2, 3, 4, 255], dtype=np.uint16), size=(1, 40, 50))
    stack = _tif(
        tmp_path / "stack.tif",
        np.concatenate([refl, fmask]),
        nodata=0,
        descriptions=["B2", "B3", "B4", "Fmask"],
    )
    cube = open_cube(prepare(stack, mask_band="Fmask", out=tmp_path / "a.zarr")["cube"])
    assert [str(b) for b in cube["band"].values] == ["B2", "B3", "B4"]  # the mask is not a feature
    clear = np.isin(fmask[0], [0, 1]) & (refl != 0).all(0)
    np.testing.assert_array_equal(cube["valid"].values, clear)
    assert np.isnan(cube["image"].values[:, ~clear]).all()
    np.testing.assert_allclose(cube["image"].values[:, clear], refl[:, clear] * 1e-4, rtol=1e-6)
    qa = rng.choice(np.array([21824, 21952, 22280, 23888, 1], dtype=np.uint16), size=(1, 40, 50))
    qa_path = _tif(tmp_path / "qa.tif", qa)
    plain = _tif(tmp_path / "refl.tif", refl, nodata=0, descriptions=["B2", "B3", "B4"])
    cube = open_cube(prepare(plain, mask=qa_path, mask_kind="qa_pixel", out=tmp_path / "b.zarr")["cube"])
    np.testing.assert_array_equal(cube["valid"].values, np.isin(qa[0], [21824, 21952]) & (refl != 0).all(0))
    with pytest.raises(InvalidInputError, match="--mask-band 'QA' is not a band of the image"):
        prepare(stack, mask_band="QA", out=tmp_path / "c.zarr")
    assert not (tmp_path / "c.zarr").exists()
