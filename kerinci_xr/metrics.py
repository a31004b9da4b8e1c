"""Pixel counts, pixel areas and class areas (hectares), computed lazily over whole scenes."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from .legend import Legend

__all__ = ["class_areas", "class_pixel_counts", "pixel_area_m2"]


def _zone_area(lat_deg: np.ndarray, a: float, b: float) -> np.ndarray:
    """Area (m^2) between the equator and ``lat`` on the ellipsoid, per radian of longitude."""
    e2 = 1.0 - (b * b) / (a * a)
    s = np.sin(np.deg2rad(lat_deg))
    if e2 < 1e-15:
        return a * a * s
    e = np.sqrt(e2)
    return b * b * (s / (2 * (1 - e2 * s * s)) + np.log((1 + e * s) / (1 - e * s)) / (4 * e))


def pixel_area_m2(grid: xr.DataArray | xr.Dataset) -> xr.DataArray:
    """Area of each pixel in square metres: a scalar for projected CRSs, ``(y,)`` for geographic.

    Geographic grids (e.g. EPSG:4326) use the exact area of the ellipsoidal cell between two
    parallels, so areas stay correct away from the equator.
    """
    crs = grid.rio.crs
    tr = grid.rio.transform()
    if crs is None:
        raise ValueError("pixel_area_m2: the grid has no CRS.")
    if crs.is_geographic:
        from pyproj import CRS

        ell = CRS.from_user_input(crs.to_wkt()).ellipsoid
        a, b = ell.semi_major_metre, ell.semi_minor_metre
        rows = np.arange(grid.sizes["y"])
        lat_top = tr.f + rows * tr.e
        lat_bottom = lat_top + tr.e
        width = np.deg2rad(abs(tr.a))
        area = np.abs(_zone_area(lat_top, a, b) - _zone_area(lat_bottom, a, b)) * width
        return xr.DataArray(area, dims="y", coords={"y": grid["y"].values}, name="pixel_area_m2")
    factor = crs.linear_units_factor[1] if crs.linear_units else 1.0
    return xr.DataArray(abs(tr.a * tr.e) * factor**2, name="pixel_area_m2")


def _wbincount_block(block: np.ndarray, weights: np.ndarray, nbins: int) -> np.ndarray:
    b = block.ravel().astype(np.int64)
    w = np.broadcast_to(weights, block.shape).ravel()
    keep = b < nbins
    return np.bincount(b[keep], weights=w[keep], minlength=nbins)[None, None, :]


def class_pixel_counts(labels: xr.DataArray, n_classes: int) -> np.ndarray:
    """Pixel count per training id ``0..n_classes`` (index 0 = nodata), one streaming pass."""
    from .preprocess import blockwise_bincount

    data = labels.data
    if not isinstance(data, da.Array):
        b = np.asarray(data).ravel()
        return np.bincount(b[b <= n_classes], minlength=n_classes + 1)
    return blockwise_bincount(data, n_classes + 1).compute()


def class_areas(labels: xr.DataArray, legend: Legend) -> pd.DataFrame:
    """Pixels and hectares per class of a training-id raster (nodata excluded).

    Returns a table with columns ``class_id``, ``code``, ``name``, ``color``, ``pixels``,
    ``hectares`` and ``percent``.
    """
    n = legend.n_classes
    area = pixel_area_m2(labels)
    counts = class_pixel_counts(labels, n)
    if area.ndim == 0:
        ha = counts * float(area) / 1e4
    else:
        data = labels.data if isinstance(labels.data, da.Array) else da.from_array(labels.data)
        col = da.from_array(area.values[:, None], chunks=(data.chunks[0], (1,)))
        sums = da.map_blocks(
            _wbincount_block,
            data,
            col,
            n + 1,
            new_axis=2,
            chunks=((1,) * data.numblocks[0], (1,) * data.numblocks[1], (n + 1,)),
            dtype=np.float64,
        ).sum(axis=(0, 1))
        ha = sums.compute() / 1e4
    total = counts[1:].sum()
    return pd.DataFrame(
        {
            "class_id": legend.ids,
            "code": legend.values,
            "name": legend.names,
            "color": legend.colors,
            "pixels": counts[1:].astype(np.int64),
            "hectares": ha[1:],
            "percent": 100.0 * counts[1:] / total if total else np.zeros(n),
        }
    )
