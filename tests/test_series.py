"""Cubes of several dates: one file per date, aligned, sorted; views, training and maps per date."""

import warnings

import numpy as np
import pytest
import rasterio

import kerinci_xr as kx
from kerinci_xr.cli import main
from kerinci_xr.cube import build_series, cube_view, open_cube
from kerinci_xr.io import open_raster
from kerinci_xr.synthetic import make_kerinci_series


def _write(raster, path):
    """A GeoTIFF with the band names as descriptions (``rio.to_raster`` drops them)."""
    raster.rio.to_raster(path)
    with rasterio.open(path, "r+") as dst:
        for i, b in enumerate(raster["band"].values, start=1):
            dst.set_band_description(i, str(b))


@pytest.fixture(scope="module")
def years(tmp_path_factory):
    root = tmp_path_factory.mktemp("years")
    return root, make_kerinci_series(root / "scene", [2015, 2023], height=200, width=180, seed=6)


def test_build_series__dates_sorted_values_per_date_equal_each_file(years):
    _, (f15, f23) = years
    legend = kx.read_legend(f15.legend)
    ds = build_series([f23.landsat, f15.landsat], labels=[f15.labels], legend=legend, chunks=64)
    assert [str(t)[:10] for t in ds["time"].values] == ["2015-07-01", "2023-07-01"]  # read from the tags
    assert ds["image"].dims == ("time", "band", "y", "x")
    assert ds["valid"].dims == ("time", "y", "x")
    for t, f in (("2015-07-01", f15), ("2023-07-01", f23)):
        raw = open_raster(f.landsat).values.astype(np.float64)
        ok = (raw != 0).all(axis=0)
        np.testing.assert_array_equal(ds["valid"].sel(time=t).values, ok)
        np.testing.assert_allclose(ds["image"].sel(time=t).values[:, ok], raw[:, ok] * 1e-4, rtol=1e-6)
    assert ds.attrs["labels_date"] == "2015-07-01"
    assert ds["labels"].dims == ("y", "x")


def test_build_series__a_date_on_another_grid_is_aligned(years, tmp_path):
    _, (f15, f23) = years
    raw = open_raster(f23.landsat)
    shifted = raw.isel(y=slice(7, None), x=slice(4, None))  # another origin and shape, same pixel size
    _write(shifted, tmp_path / "Landsat_2023_shifted.tif")
    ds = build_series(
        [f15.landsat, tmp_path / "Landsat_2023_shifted.tif"], dates=["2015-07-01", "2023-07-01"]
    )
    later = ds["image"].sel(time="2023-07-01").values
    want = raw.values[:, 7:, 4:].astype(np.float64) * 1e-4
    ok = (raw.values[:, 7:, 4:] != 0).all(axis=0)
    np.testing.assert_allclose(later[:, 7:, 4:][:, ok], want[:, ok], rtol=1e-5)
    assert np.isnan(later[:, :7, :]).all()
    assert not ds["valid"].sel(time="2023-07-01").values[:7].any()


def test_build_series__bad_input(years, tmp_path):
    _, (f15, f23) = years
    with pytest.raises(kx.InvalidInputError, match="distinct dates"):
        build_series([f15.landsat, f23.landsat], dates=["2015-07-01", "2015-07-01"])
    with pytest.raises(kx.InvalidInputError, match="one date per image"):
        build_series([f15.landsat, f23.landsat], dates=["2015-07-01"])
    seven = open_raster(f23.landsat).isel(band=slice(0, 7))
    _write(seven, tmp_path / "seven_2023.tif")
    with pytest.raises(kx.InvalidInputError, match=r"bands \['B1', 'B2', 'B3', 'B4', 'B5', 'B6', 'B7'\]"):
        build_series([f15.landsat, tmp_path / "seven_2023.tif"])
    (tmp_path / "nodate.tif").write_bytes((tmp_path / "seven_2023.tif").read_bytes())
    with pytest.raises(kx.InvalidInputError, match="no date"):
        build_series([f15.landsat, tmp_path / "nodate.tif"])


def test_prepare_sample_train_predict__two_dates_and_stacked(years, tmp_path, capsys):
    _, (f15, f23) = years
    cube = tmp_path / "cube.zarr"
    argv = [
        "-q",
        "prepare",
        "--image",
        str(f15.landsat),
        "--image",
        str(f23.landsat),
        "--labels",
        str(f15.labels),
        "--legend",
        str(f15.legend),
        "--chunk",
        "64",
        "--out",
        str(cube),
    ]
    assert main(argv) == 0
    assert main(["info", str(cube)]) == 0
    assert "dates     2015-07-01, 2023-07-01" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stack = kx.sample(cube, per_class=4, patch=32, block=64, temporal="stack", out=tmp_path / "s.zarr")[
            "patches"
        ]
    bands = [str(b) for b in kx.PatchDataset(stack, split="train").bands]
    assert bands[:2] == ["2015-07-01/B1", "2015-07-01/B2"]
    assert bands[-1] == "2023-07-01/B9"
    assert len(bands) == 16
    model = kx.train(stack, epochs=1, depth=2, base=8, out=tmp_path / "m.pt")["model"]
    pred = kx.predict(cube, model=model, chunk=64, out=tmp_path / "p.zarr")["prediction"]
    with pytest.raises(kx.InvalidInputError, match="--all-dates"):
        kx.predict(cube, model=model, all_dates=True, out=tmp_path / "q.zarr")
    view = cube_view(open_cube(cube), temporal="stack")
    assert view["image"].shape == (16, 200, 180)
    assert view["valid"].dims == ("y", "x")
    import xarray as xr

    assert xr.open_zarr(pred)["classes"].dims == ("y", "x")


def test_write_cube__gdal_opens_a_cube_of_several_dates_without_an_error(years, tmp_path):
    import pyproj

    from .test_cube import gdal_georeference

    _, (f15, f23) = years
    ds = build_series([f15.landsat, f23.landsat], labels=[f15.labels], legend=kx.read_legend(f15.legend))
    path = kx.write_cube(ds, tmp_path / "series.zarr")
    wkt, gt = gdal_georeference(path, "image:1:0")  # the second date's first band; no ERROR line
    expect = tuple(ds.rio.transform())
    assert pyproj.CRS(wkt).equals(pyproj.CRS(ds.rio.crs.to_wkt()))
    assert gt == pytest.approx([expect[2], expect[0], expect[1], expect[5], expect[3], expect[4]])
    assert [str(b) for b in kx.open_cube(path)["band"].values] == [str(b) for b in ds["band"].values]
