import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject

from kerinci_xr.errors import (
    GridMismatchError,
    InputFileNotFoundError,
    InvalidInputError,
    RasterReadError,
)
from kerinci_xr.io import align_to, grid_differences, open_raster, require_same_grid

from .conftest import raise_if_dask_computes, shared_file


def _coarse_shifted_copy(src_path, dst_path, *, factor=1.5, shift=(17.0, -11.0)):
    """Resample a raster onto a coarser grid with another origin (a second sensor's grid)."""
    with rasterio.open(src_path) as src:
        data = src.read()
        t = src.transform
        res = t.a * factor
        tr = Affine(res, 0, t.c - 3 * res + shift[0], 0, -res, t.f + 3 * res + shift[1])
        h = int(src.height / factor) + 7
        w = int(src.width / factor) + 7
        out = np.full((src.count, h, w), np.nan, dtype="float32")
        reproject(
            data,
            out,
            src_transform=t,
            src_crs=src.crs,
            dst_transform=tr,
            dst_crs=src.crs,
            resampling=Resampling.bilinear,
            src_nodata=np.nan,
            dst_nodata=np.nan,
        )
        profile = src.profile | {"height": h, "width": w, "transform": tr, "nodata": np.nan}
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(out)
    return dst_path


def test_open_raster__lazy_with_band_names_from_file():
    path = shared_file("nc_landsat7", "nc_landsat7_2000_6band_dn.tif")
    with raise_if_dask_computes():
        da_ = open_raster(path, chunks=128)
    assert da_.dims == ("band", "y", "x")
    assert list(da_["band"].values) == [
        "B1_blue",
        "B2_green",
        "B3_red",
        "B4_nir",
        "B5_swir1",
        "B7_swir2",
    ]
    assert da_.chunks[0] == (6,)
    assert da_.chunks[1][0] == 128
    assert da_.attrs["nodata"] == 0
    assert da_.rio.crs.to_epsg() == 32119
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(da_.isel(band=3).values, src.read(4))


def test_open_raster__given_band_names():
    path = shared_file("landsat_sar", "LC08_003069_20180906_clip.tif")
    da_ = open_raster(path, bands=["B2", "B3", "B4", "B5", "B6", "B7"])
    assert list(da_["band"].values) == ["B2", "B3", "B4", "B5", "B6", "B7"]


def test_open_raster__fewer_bands_than_named():
    path = shared_file("landsat_sar", "LC08_003069_20180906_clip.tif")
    with pytest.raises(InvalidInputError, match=r"7 band names given .* the file has 6 band"):
        open_raster(path, bands=["B1", "B2", "B3", "B4", "B5", "B6", "B7"])


def test_open_raster__unnamed_bands_get_placeholders():
    da_ = open_raster(shared_file("landsat_sar", "S1_2018_VV_VH_clip.tif"))
    assert list(da_["band"].values) == ["band_1", "band_2", "band_3"]


def test_open_raster__missing_file(tmp_path):
    with pytest.raises(InputFileNotFoundError, match=r"nope.tif: raster not found"):
        open_raster(tmp_path / "nope.tif")


def test_open_raster__not_a_raster(tmp_path):
    bad = tmp_path / "notes.tif"
    bad.write_text("this is not a GeoTIFF")
    with pytest.raises(RasterReadError, match=r"notes.tif: expected a raster GDAL can read"):
        open_raster(bad)


def test_require_same_grid__names_every_difference(small_scene):
    landsat = open_raster(small_scene.landsat)
    palsar = open_raster(small_scene.palsar)
    assert grid_differences(landsat, landsat) == []
    with pytest.raises(GridMismatchError) as info:
        require_same_grid(landsat, palsar, what="labels")
    msg = str(info.value)
    assert "Palsar_Kerinci_2023_v1.tif" in msg
    assert "shape" in msg
    assert "transform" in msg
    assert "--align-labels" in msg


@pytest.mark.parametrize("chunk", [32, 1024])
def test_align_to__coarser_shifted_radar_back_onto_landsat_grid(tmp_path, chunk):
    """Real Sentinel-1 resampled onto a coarser, shifted grid and aligned back."""
    landsat = open_raster(shared_file("landsat_sar", "LC08_003069_20180906_clip.tif"), chunks=chunk)
    s1_path = shared_file("landsat_sar", "S1_2018_VV_VH_clip.tif")
    coarse = _coarse_shifted_copy(s1_path, tmp_path / "s1_coarse.tif")
    radar = open_raster(coarse, bands=["VV", "VH", "ratio"], chunks=chunk)
    assert grid_differences(landsat, radar)
    with raise_if_dask_computes():
        aligned = align_to(radar, landsat, resampling="bilinear")
    assert aligned.sizes == {"band": 3, "y": 104, "x": 110}
    assert aligned.chunks[1] == landsat.chunks[1]
    assert grid_differences(aligned, landsat) == []
    got = aligned.values
    # the same warp done in one piece in memory
    with rasterio.open(coarse) as src:
        whole = np.full((3, 104, 110), np.nan, dtype="float32")
        reproject(
            src.read(),
            whole,
            src_transform=src.transform,
            src_crs=src.crs,
            dst_transform=landsat.rio.transform(),
            dst_crs=landsat.rio.crs,
            resampling=Resampling.bilinear,
            src_nodata=np.nan,
            dst_nodata=np.nan,
            tolerance=0.0,
        )
    np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-5, equal_nan=True)
    # and close to the original S1 it came from (coarsening loses detail, not position)
    with rasterio.open(s1_path) as src:
        orig = src.read()
    inner = (slice(None), slice(4, -4), slice(4, -4))
    ok = np.isfinite(got[inner]) & np.isfinite(orig[inner])
    assert ok.mean() > 0.95
    r = np.corrcoef(got[inner][ok], orig[inner][ok])[0, 1]
    assert r > 0.9


def test_align_to__reads_only_the_windows_it_needs(tmp_path):
    landsat = open_raster(shared_file("landsat_sar", "LC08_003069_20180906_clip.tif"), chunks=32)
    coarse = _coarse_shifted_copy(
        shared_file("landsat_sar", "S1_2018_VV_VH_clip.tif"), tmp_path / "c.tif", factor=1.0
    )
    radar = open_raster(coarse, chunks=16)
    touched = []

    def touch(block, block_info=None):
        touched.append(block_info[0]["chunk-location"])
        return block

    radar = radar.copy(data=radar.data.map_blocks(touch, dtype=radar.dtype))
    aligned = align_to(radar, landsat)
    assert touched == []  # building the graph read nothing
    aligned.isel(y=slice(0, 32), x=slice(0, 32)).compute(scheduler="sync")
    assert 0 < len(set(touched)) <= 9 < radar.data.npartitions


def test_align_to__nearest_keeps_categories(small_scene):
    labels = open_raster(small_scene.labels, chunks=64)
    radar = open_raster(small_scene.palsar, chunks=64)
    on_radar = align_to(labels.isel(band=0, drop=True), radar, resampling="nearest")
    values = np.unique(on_radar.values)
    assert set(values) <= set(np.unique(labels.values)) | {0}


def test_align_to__bad_resampling(small_scene):
    da_ = open_raster(small_scene.labels)
    with pytest.raises(InvalidInputError, match="'nearest' or 'bilinear'"):
        align_to(da_, da_, resampling="cubic")  # type: ignore[arg-type]


def test_open_raster__in_memory_result_is_a_dataarray(small_scene):
    loaded = open_raster(small_scene.landsat).compute()
    assert isinstance(loaded, xr.DataArray)
    assert isinstance(loaded.data, np.ndarray)  # in memory, no longer a dask array
    with rasterio.open(small_scene.landsat) as src:
        np.testing.assert_array_equal(loaded.values, src.read())
        assert loaded.rio.crs == src.crs
        assert loaded.rio.transform() == src.transform


def test_open_raster__select_keeps_named_bands_and_never_reads_the_others(tmp_path):

    from kerinci_xr.synthetic import make_kerinci_scene

    scene = make_kerinci_scene(tmp_path / "s", height=80, width=70, radar=False)
    arr = open_raster(scene.landsat, select=["B5", "B6", "B7"], chunks=32)
    assert list(arr["band"].values) == ["B5", "B6", "B7"]
    assert arr.data.chunks[0] == (3,)
    np.testing.assert_array_equal(arr.values, open_raster(scene.landsat).sel(band=["B5", "B6", "B7"]).values)
    graph = dict(arr.data.__dask_graph__())
    reads = [v.args[3] for k, v in graph.items() if str(k).startswith("_mosaic_block")]
    assert len(reads) == 9
    assert all(r == [5, 6, 7] for r in reads)  # every chunk reads B5..B7 only (1-based)
    with pytest.raises(InvalidInputError, match=r"bands \['B8'\] to select are not in the file"):
        open_raster(scene.landsat, select=["B8"])
