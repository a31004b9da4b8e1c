"""Tiled exports: Earth Engine tiles prepared from a glob equal the whole scene's cube."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.windows import Window

from kerinci_xr.api import prepare
from kerinci_xr.errors import InvalidInputError, RasterReadError
from kerinci_xr.io import expand_images, open_raster


def _cut(src_path, out_dir, rows, cols, *, stem="Landsat_Kerinci_2023_v1", shift=(0.0, 0.0), edit=None):
    """Cut a GeoTIFF into tiles named as Earth Engine names them (row and column offsets)."""
    out_dir.mkdir(exist_ok=True)
    paths = []
    with rasterio.open(src_path) as src:
        for r0, r1 in itertools.pairwise(rows):
            for c0, c1 in itertools.pairwise(cols):
                win = Window(c0, r0, c1 - c0, r1 - r0)
                data = src.read(window=win)
                profile = src.profile | {
                    "height": r1 - r0,
                    "width": c1 - c0,
                    "transform": src.window_transform(win) * src.transform.translation(*shift),
                    "tiled": False,
                }
                profile.pop("blockxsize", None), profile.pop("blockysize", None)
                path = out_dir / f"{stem}-{r0:010d}-{c0:010d}.tif"
                if edit is not None:
                    data = edit(path, data)
                with rasterio.open(path, "w", **profile) as dst:
                    dst.write(data)
                    dst.descriptions = src.descriptions
                    dst.update_tags(**src.tags())
                paths.append(path)
    return paths


def test_tiles__glob_equals_the_whole_scene_bit_for_bit(small_scene, tmp_path):
    h, w = 320, 300
    tiles = _cut(small_scene.landsat, tmp_path / "tiles", [0, 77, h], [0, 203, w])  # 4 uneven tiles
    whole = prepare(
        small_scene.landsat,
        labels=small_scene.labels,
        legend=small_scene.legend,
        chunk=64,
        out=tmp_path / "whole.zarr",
    )["cube"]
    pattern = str(tmp_path / "tiles" / "Landsat_Kerinci_2023_v1-*.tif")
    tiled = prepare(
        pattern, labels=small_scene.labels, legend=small_scene.legend, chunk=64, out=tmp_path / "tiled.zarr"
    )["cube"]
    a, b = xr.open_zarr(whole), xr.open_zarr(tiled)
    for name in ("image", "valid", "labels"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
        xr.testing.assert_identical(a[name].coords.to_dataset(), b[name].coords.to_dataset())
    assert list(b["band"].values) == ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9"]
    assert a.rio.transform() == b.rio.transform()
    # several tile files given one by one are the same single mosaic, not several dates
    assert expand_images(tiles) == [tuple(tiles)]
    assert expand_images([pattern]) == [tuple(sorted(tiles))]


def test_tiles__misaligned_tile_refused_naming_it(small_scene, tmp_path):
    tiles = _cut(small_scene.landsat, tmp_path / "t", [0, 160, 320], [0, 150, 300])
    with rasterio.open(tiles[3], "r+") as dst:  # shift the last tile by a third of a pixel
        dst.transform = dst.transform * dst.transform.translation(1 / 3, 0)
    with pytest.raises(
        InvalidInputError, match=rf"{tiles[3].name}: not aligned on the pixel grid.*0.333 columns"
    ):
        open_raster(str(tmp_path / "t" / "*.tif"))


def test_tiles__other_bands_or_crs_refused(small_scene, tmp_path):
    tiles = _cut(small_scene.landsat, tmp_path / "t", [0, 160, 320], [0, 300])
    with rasterio.open(tiles[1], "r+") as dst:
        dst.crs = "EPSG:32747"
    with pytest.raises(InvalidInputError, match=rf"{tiles[1].name}: expected the CRS of"):
        open_raster(tiles)


def test_tiles__overlap_with_other_values_is_an_error(small_scene, tmp_path):
    t1 = _cut(small_scene.landsat, tmp_path / "t", [0, 200], [0, 300], stem="a")
    t2 = _cut(small_scene.landsat, tmp_path / "t", [150, 320], [0, 300], stem="b", edit=lambda p, d: d + 1)
    mosaic = open_raster([*t1, *t2], chunks=64)
    assert mosaic.shape == (8, 320, 300)
    np.testing.assert_array_equal(mosaic[:, :128].values, open_raster(small_scene.landsat)[:, :128].values)
    with pytest.raises(
        RasterReadError,
        match=r"b-0000000150-0000000000.tif: overlaps .*a-0000000000-0000000000.tif "
        r"with different values \(mosaic rows \d+:\d+, columns \d+:\d+\)",
    ):
        mosaic.compute()
