"""Lazy preprocessing: reflectance/radar scaling, nodata masks, label remap, indices, composites.

Everything here builds dask graphs; nothing reads a whole scene. The only functions that
compute are the ones whose result is a number, not an image (:func:`label_code_counts`,
:func:`stretch_limits`), and they stream chunk by chunk.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .errors import InvalidInputError
from .legend import Legend

__all__ = [
    "BAND_ROLES",
    "band_roles",
    "check_label_codes",
    "false_colour",
    "label_code_counts",
    "nbr",
    "ndvi",
    "ndwi",
    "normalized_difference",
    "parse_band_roles",
    "remap_labels",
    "scale_values",
    "spectral_index",
    "stretch_limits",
    "valid_mask",
]

#: Band names of the reflective bands per sensor, by role.
BAND_ROLES: dict[str, dict[str, str]] = {
    "landsat8": {
        "coastal": "B1",
        "blue": "B2",
        "green": "B3",
        "red": "B4",
        "nir": "B5",
        "swir1": "B6",
        "swir2": "B7",
        "cirrus": "B9",
    },
    "landsat7": {
        "blue": "B1",
        "green": "B2",
        "red": "B3",
        "nir": "B4",
        "swir1": "B5",
        "swir2": "B7",
    },
    "sentinel2": {
        "blue": "B2",
        "green": "B3",
        "red": "B4",
        "nir": "B8",
        "swir1": "B11",
        "swir2": "B12",
    },
}
_ROLE_NAMES = ("coastal", "blue", "green", "red", "nir", "swir1", "swir2", "cirrus")


def parse_band_roles(pairs: Sequence[str] | None, names: Sequence[str]) -> dict[str, str]:
    """``("nir=B4", "swir1=B5")`` -> ``{"nir": "B4", "swir1": "B5"}``, checked against role and band names."""
    out: dict[str, str] = {}
    for pair in pairs or ():
        role, _, band = pair.partition("=")
        role, band = role.strip().lower(), band.strip()
        if role not in _ROLE_NAMES or band not in names:
            raise InvalidInputError(
                f"band roles: expected ROLE=BAND with a role of {list(_ROLE_NAMES)} and a band of "
                f"{list(names)}, found {pair!r}. Fix: e.g. --band-roles nir=B4,swir1=B5,swir2=B7"
            )
        out[role] = band
    return out


def band_roles(names: Sequence[str], *, sensor: str = "auto") -> dict[str, str]:
    """Map spectral roles (``"red"``, ``"nir"``, ``"swir1"`` ...) to band names.

    Roles come, in order of preference, from role names used as band names (``"nir"``) or as
    suffixes (``"B4_nir"``), then from the sensor's table (:data:`BAND_ROLES`). With
    ``sensor="auto"`` a band ``B6`` or ``B9`` means Landsat 8/9 (OLI), ``B8`` plus ``B11`` means
    Sentinel-2, and ``B1..B5, B7`` without ``B6`` means Landsat 5/7 (TM/ETM+).
    """
    names = [str(n) for n in names]
    roles: dict[str, str] = {}
    for n in names:
        m = re.search(r"(?:^|_)(" + "|".join(_ROLE_NAMES) + r")$", n.lower())
        if m:
            roles.setdefault(m.group(1), n)
    if roles:
        return roles
    if sensor == "auto":
        s = set(names)
        if {"B8", "B11"} <= s:
            sensor = "sentinel2"
        elif "B6" in s or "B9" in s:
            sensor = "landsat8"
        elif {"B1", "B4", "B5"} <= s:
            sensor = "landsat7"
        else:
            return {}
    if sensor not in BAND_ROLES:
        raise InvalidInputError(f"sensor: expected one of {sorted(BAND_ROLES)} or 'auto', found {sensor!r}.")
    return {role: b for role, b in BAND_ROLES[sensor].items() if b in names}


def valid_mask(raw: xr.DataArray, *, nodata: float | None = None) -> xr.DataArray:
    """``(y, x)`` bool mask: True where every band is finite (not NaN, not +-inf) and differs from
    ``nodata``."""
    nodata = raw.attrs.get("nodata") if nodata is None else nodata
    if np.issubdtype(raw.dtype, np.floating):
        ok = xr.apply_ufunc(np.isfinite, raw, dask="allowed")
    else:
        ok = xr.ones_like(raw, dtype=bool)
    if nodata is not None and not np.isnan(nodata):
        ok = ok & (raw != raw.dtype.type(nodata))
    return ok.all("band").rename("valid") if "band" in raw.dims else ok.rename("valid")


def scale_values(
    raw: xr.DataArray,
    *,
    scale: float = 1e-4,
    offset: float = 0.0,
    nodata: float | None = None,
) -> xr.DataArray:
    """Scale stored integers to physical values lazily: ``raw * scale + offset`` as float32.

    Use ``scale=1e-4`` for Landsat surface reflectance x1e4, ``scale=1/255`` for 8-bit DN,
    ``scale=1e-3`` for radar backscatter stored as dB x1e3. Pixels where any band equals
    ``nodata`` (default ``raw.attrs["nodata"]``) or is not finite become NaN in every band.
    """
    if not np.isfinite(offset):
        raise InvalidInputError(f"offset: expected a finite number, found {offset!r}.")
    if not np.isfinite(scale) or scale == 0:
        raise InvalidInputError(f"scale: expected a finite non-zero number, found {scale!r}.")
    ok = valid_mask(raw, nodata=nodata)
    out = (raw.astype(np.float32) * np.float32(scale) + np.float32(offset)).where(ok)
    out.attrs = {k: v for k, v in raw.attrs.items() if k != "nodata"} | {
        "scale_factor_applied": float(scale),
        "add_offset_applied": float(offset),
    }
    return out.astype(np.float32)


def _remap_block(block: np.ndarray, lut: np.ndarray) -> np.ndarray:
    idx = block.astype(np.int64, copy=False)
    inside = (idx >= 0) & (idx < lut.size)
    return np.where(inside, lut[np.where(inside, idx, 0)], 0).astype(np.uint8)


def remap_labels(labels: xr.DataArray, legend: Legend) -> xr.DataArray:
    """Remap original codes to training ids 1..N lazily with the legend's lookup table.

    Codes missing from the legend (and the label nodata value) become 0. Use
    :func:`check_label_codes` to count or refuse unknown codes.
    """
    lut = legend.lut
    if isinstance(labels.data, da.Array):
        data = labels.data.map_blocks(_remap_block, lut, dtype=np.uint8)
    else:
        data = _remap_block(np.asarray(labels.data), lut)
    out = labels.copy(data=data)
    out.attrs = legend.cf_attrs("reference land-cover class (training id)")
    return out.rename("labels")


def _bincount_block(block: np.ndarray, nbins: int) -> np.ndarray:
    b = block.ravel()
    return np.bincount(b[b < nbins], minlength=nbins)[None, None, :]


def blockwise_bincount(arr: da.Array, nbins: int) -> da.Array:
    """Lazy ``bincount`` of a 2-D dask array of non-negative ints (values >= nbins dropped)."""
    counts = arr.map_blocks(
        _bincount_block,
        nbins,
        new_axis=2,
        chunks=((1,) * arr.numblocks[0], (1,) * arr.numblocks[1], (nbins,)),
        dtype=np.int64,
    )
    return counts.sum(axis=(0, 1))


def _unique_counts_block(block: np.ndarray) -> dict[float, int]:
    values, counts = np.unique(block, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist(), strict=True))


def label_code_counts(labels: xr.DataArray, *, source: str = "labels") -> dict[int, int]:
    """Pixel count of every code in a raw label raster (one streaming pass).

    Codes must be integers: a float raster holding 2001.7 or NaN is refused with the values found
    (they would otherwise be truncated, or be no class at all).
    """
    data = labels.data
    parts = (
        [_unique_counts_block(np.asarray(data))]
        if not isinstance(data, da.Array)
        else dask.compute(*[dask.delayed(_unique_counts_block)(b) for b in data.to_delayed().ravel()])
    )
    total: dict[float, int] = {}
    for part in parts:
        for k, v in part.items():
            total[k] = total.get(k, 0) + v
    bad = sorted((k for k in total if not (np.isfinite(k) and float(k).is_integer())), key=str)
    if bad:
        raise InvalidInputError(
            f"{source}: expected integer class codes, found {len(bad)} other value(s), e.g. "
            f"{[f'{v:g}' for v in bad[:5]]} "
            f"({sum(total[k] for k in bad):,} pixels). Fix: write the labels as an integer raster of the "
            "legend's codes (nodata 0)."
        )
    return dict(sorted((int(k), v) for k, v in total.items()))


def check_label_codes(
    code_counts: Mapping[int, int],
    legend: Legend,
    *,
    nodata: float | None = None,
    strict: bool = False,
    source: str = "labels",
) -> dict[int, int]:
    """Codes present in the labels but missing from the legend, with pixel counts.

    Warns (or, with ``strict=True``, raises) when there are any; the label nodata value and 0
    are never counted as unknown.
    """
    known = set(legend.values) | {0}
    if nodata is not None and not np.isnan(nodata):
        known.add(int(nodata))
    unknown = {c: n for c, n in code_counts.items() if c not in known}
    if unknown:
        total = sum(unknown.values())
        msg = (
            f"{source}: {total} pixel(s) carry {len(unknown)} code(s) missing from the legend "
            f"{legend.source}: {unknown}"
        )
        if strict:
            raise InvalidInputError(
                msg + "; --strict refuses them, nothing was written. Fix: add the codes to lc.json, or run "
                "without --strict (strict=False in Python) to label those pixels 0 (ignored)."
            )
        warnings.warn(msg + "; they become 0 (nodata/ignored).", UserWarning, stacklevel=2)
    return unknown


def _band(image: xr.DataArray, role: str, roles: Mapping[str, str] | None) -> xr.DataArray:
    roles = band_roles(list(image["band"].values)) if roles is None else roles
    name = roles.get(role)
    if name is None or name not in list(image["band"].values):
        raise InvalidInputError(
            f"expected a {role!r} band in {list(image['band'].values)}, found none. "
            "Fix: name the bands (e.g. --bands B1,B2,...) or pass band roles explicitly."
        )
    return image.sel(band=name, drop=True)


def normalized_difference(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    """``(a - b) / (a + b)`` as float32; NaN where the sum is 0."""
    total = a + b
    return ((a - b) / total.where(total != 0)).astype(np.float32)


_INDICES = {"ndvi": ("nir", "red"), "ndwi": ("green", "nir"), "nbr": ("nir", "swir2")}


def spectral_index(image: xr.DataArray, name: str, *, roles: Mapping[str, str] | None = None) -> xr.DataArray:
    """A normalised-difference index by name: ``"ndvi"``, ``"ndwi"`` (McFeeters) or ``"nbr"``."""
    key = name.lower()
    if key not in _INDICES:
        raise InvalidInputError(f"index: expected one of {sorted(_INDICES)}, found {name!r}.")
    a, b = _INDICES[key]
    return normalized_difference(_band(image, a, roles), _band(image, b, roles)).rename(key)


def ndvi(image: xr.DataArray, *, roles: Mapping[str, str] | None = None) -> xr.DataArray:
    """Normalised difference vegetation index (NIR - red) / (NIR + red)."""
    return spectral_index(image, "ndvi", roles=roles)


def ndwi(image: xr.DataArray, *, roles: Mapping[str, str] | None = None) -> xr.DataArray:
    """Normalised difference water index (green - NIR) / (green + NIR), McFeeters 1996."""
    return spectral_index(image, "ndwi", roles=roles)


def nbr(image: xr.DataArray, *, roles: Mapping[str, str] | None = None) -> xr.DataArray:
    """Normalised burn ratio (NIR - SWIR2) / (NIR + SWIR2)."""
    return spectral_index(image, "nbr", roles=roles)


def stretch_limits(
    image: xr.DataArray,
    *,
    percentiles: tuple[float, float] = (2.0, 98.0),
    bins: int = 8192,
) -> np.ndarray:
    """Per-band percentile limits ``(band, 2)`` computed chunk by chunk, without loading the scene.

    Two streaming passes: per-band min/max, then a per-band histogram of ``bins`` bins between
    them; the percentiles are read off the cumulative histogram, so they equal the nearest-rank
    percentiles (``numpy.percentile(..., method="inverted_cdf")``) to within ``(max - min) / bins``.
    """
    lo_p, hi_p = percentiles
    if not 0 <= lo_p < hi_p <= 100:
        raise InvalidInputError(f"percentiles: expected 0 <= low < high <= 100, found {percentiles!r}.")
    arr = image.transpose("band", "y", "x").data
    arr = arr if isinstance(arr, da.Array) else da.from_array(np.asarray(arr))
    nb = arr.shape[0]
    mins, maxs = dask.compute(da.nanmin(arr, axis=(1, 2)), da.nanmax(arr, axis=(1, 2)))
    edges = [np.linspace(lo, hi if hi > lo else lo + 1, bins + 1) for lo, hi in zip(mins, maxs, strict=True)]
    hists = dask.compute(*[da.histogram(arr[b].ravel(), bins=edges[b])[0] for b in range(nb)])
    out = np.zeros((nb, 2), dtype=np.float64)
    for b, hist in enumerate(hists):
        cdf = np.cumsum(hist, dtype=np.float64)
        if cdf[-1] == 0:
            out[b] = (np.nan, np.nan)
            continue
        cdf /= cdf[-1]
        for k, p in enumerate((lo_p, hi_p)):
            i = int(np.searchsorted(cdf, p / 100.0, side="left"))
            out[b, k] = edges[b][min(i + 1, bins)] if k else edges[b][i]
    return out


def false_colour(
    image: xr.DataArray,
    *,
    bands: Sequence[str] | None = None,
    percentiles: tuple[float, float] = (2.0, 98.0),
    limits: np.ndarray | None = None,
    roles: Mapping[str, str] | None = None,
) -> xr.DataArray:
    """A lazy RGB composite in [0, 1], stretched between per-band percentiles.

    Defaults to NIR-SWIR1-SWIR2 (B5, B6, B7 on Landsat 8/9), the composite that separates
    forest, agriculture, bare ground and water. The limits are computed in a streaming pass
    (:func:`stretch_limits`) unless given; the stretched image itself stays lazy. NaN marks
    invalid pixels.
    """
    if bands is None:
        r = band_roles(list(image["band"].values)) if roles is None else roles
        missing = [k for k in ("nir", "swir1", "swir2") if k not in r]
        if missing:
            raise InvalidInputError(
                f"false colour: expected NIR, SWIR1 and SWIR2 bands among "
                f"{list(image['band'].values)}, found no {missing}. Fix: pass bands=[...]."
            )
        bands = [r["nir"], r["swir1"], r["swir2"]]
    if len(bands) != 3:
        raise InvalidInputError(f"false colour: expected 3 bands, found {list(bands)}.")
    absent = [b for b in bands if b not in list(image["band"].values)]
    if absent:
        raise InvalidInputError(
            f"false colour: bands {absent} not in the image bands {list(image['band'].values)}."
        )
    rgb = image.sel(band=list(bands))
    if limits is None:
        limits = stretch_limits(rgb, percentiles=percentiles)
    lo = xr.DataArray(limits[:, 0].astype(np.float32), dims="band", coords={"band": rgb["band"]})
    hi = xr.DataArray(limits[:, 1].astype(np.float32), dims="band", coords={"band": rgb["band"]})
    out = ((rgb - lo) / (hi - lo).where(hi > lo, 1)).clip(0, 1).astype(np.float32)
    out.attrs = {"stretch_limits": limits.tolist(), "percentiles": list(percentiles)}
    return out.rename("false_colour")
