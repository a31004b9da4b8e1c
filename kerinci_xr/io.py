"""Lazy raster IO: open GeoTIFF/COG as chunked DataArrays, check grids, align other grids lazily."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import urlsplit

import dask
import dask.array as da
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from ._locations import (
    Location,
    as_location,
    gdal_path,
    gdal_s3_env,
    glob_url,
    is_url,
    location_error,
    open_gdal,
)
from ._outputs import atomic_output, check_output
from .errors import GridMismatchError, InputFileNotFoundError, InvalidInputError, RasterReadError

__all__ = [
    "DEFAULT_CHUNK",
    "Resampling",
    "align_to",
    "expand_images",
    "gdal_path",
    "grid_differences",
    "normalize_chunks",
    "open_mosaic",
    "open_raster",
    "qgis_style",
    "require_same_grid",
    "write_cog",
    "write_image_cog",
]

log = logging.getLogger(__name__)

# Chunk reads are tile-aligned and read every tile once, so GDAL's block cache (by default 5 % of
# the machine's memory, per process) holds memory without saving reads: on an 8000 x 8000 x 8
# prepare it was 1 GiB of the 1.6 GiB peak. A smaller default, unless the user has set one.
os.environ.setdefault("GDAL_CACHEMAX", "64")
# an S3-compatible endpoint given the way boto3 and s3fs take it (AWS_ENDPOINT_URL), for GDAL too
gdal_s3_env()

#: Default spatial chunk edge in pixels (all bands in one chunk).
DEFAULT_CHUNK = 1024

Resampling = Literal["nearest", "bilinear"]


def normalize_chunks(chunks: int | Mapping[str, int] | None) -> dict[str, int]:
    """Turn ``1024`` or ``{"y": 512, "x": 512}`` into ``{"band": -1, "y": .., "x": ..}``."""
    if chunks is None:
        chunks = DEFAULT_CHUNK
    if isinstance(chunks, int):
        out = {"band": -1, "y": chunks, "x": chunks}
    else:
        out = {"band": -1, "y": DEFAULT_CHUNK, "x": DEFAULT_CHUNK, **dict(chunks)}
    for dim in ("y", "x"):
        if not isinstance(out[dim], int) or out[dim] < 1:
            raise InvalidInputError(
                f"chunks: expected a positive number of pixels for {dim!r}, found {out[dim]!r}."
            )
    return out


def _file_band_names(descriptions: Sequence[str | None], count: int) -> list[str]:
    if descriptions and all(d for d in descriptions) and len(set(descriptions)) == count:
        return [str(d) for d in descriptions]
    return [f"band_{i}" for i in range(1, count + 1)]


def open_raster(
    path: str | Path | Sequence[str | Path],
    *,
    bands: Sequence[str] | None = None,
    chunks: int | Mapping[str, int] | None = None,
    name: str | None = None,
    select: Sequence[str] | None = None,
) -> xr.DataArray:
    """Open a GeoTIFF/COG lazily as a chunked ``(band, y, x)`` DataArray.

    No pixel is read: the result is backed by dask, one task per chunk.

    Parameters
    ----------
    path
        Raster file readable by GDAL; a glob (``"Landsat_2023-*.tif"``) or several files of one
        grid open as one mosaic (:func:`open_mosaic`).
    bands
        Names for the bands, in file order. By default the band descriptions stored in the
        file, or ``band_1 .. band_n`` when it has none.
    chunks
        Spatial chunk edge in pixels, or a ``{"y": .., "x": ..}`` mapping; all bands share a chunk.
    name
        Name of the DataArray (defaults to the file stem).
    select
        Keep only these bands (by name, in this order); the others are never read.

    Returns
    -------
    xarray.DataArray
        dims ``("band", "y", "x")``, a ``band`` coordinate of names, the CRS and transform via
        ``.rio``, and ``attrs["nodata"]`` (``None`` if the file declares none).
    """
    files = _expand(path)
    source = str(path) if isinstance(path, str | os.PathLike) else None
    # every raster is read by the windowed reader (one file is a mosaic of one tile): each chunk
    # reads only its window and the bands kept, and a damaged tile is named with its window
    return open_mosaic(files, bands=bands, chunks=chunks, name=name, select=select, source=source)


#: Earth Engine's names for the tiles of a large export: ``NAME-ROWOFFSET-COLOFFSET.tif``.
_EE_TILE = re.compile(r"^(?P<stem>.+)-(?P<row>\d{10})-(?P<col>\d{10})$")


def _is_glob(path: Any) -> bool:
    return isinstance(path, str | os.PathLike) and any(ch in str(path) for ch in "*?[")


def _expand(path: Any) -> list[Any]:
    """Files of a path, a glob or a list of paths (sorted for a glob); a URL pattern lists the
    objects under its prefix (``s3://bucket/scenes/L8-*.tif``)."""
    if isinstance(path, str | os.PathLike):
        if not _is_glob(path):
            return [as_location(path)]
        found: list[Any] = glob_url(str(path)) if is_url(path) else sorted(glob.glob(str(path)))
        if not found:
            raise InputFileNotFoundError(
                f"{path}: no file matches this pattern. Fix: check the folder and name."
            )
        return [as_location(p) for p in found]
    return [p for item in path for p in _expand(item)]


def _stem(location: Any) -> str:
    """The file name without its suffix, for a path or a URL."""
    return PurePosixPath(urlsplit(str(location)).path).stem if is_url(location) else Path(location).stem


def expand_images(paths: Sequence[str | Path]) -> list[Path | tuple[Path, ...]]:
    """Image arguments as images: each argument one image (a date), where a glob is one mosaic and
    consecutive Earth Engine tiles of one export (``NAME-0000000000-0000032768.tif``) join into one."""
    out: list[Path | tuple[Path, ...]] = []
    stems: list[str | None] = []
    for arg in paths:
        files = _expand(arg)
        m = _EE_TILE.match(_stem(files[0])) if len(files) == 1 else None
        stem = m.group("stem") if m else None
        if stem is not None and stems and stems[-1] == stem:
            prev = out[-1]
            out[-1] = (*(prev if isinstance(prev, tuple) else (prev,)), files[0])
            continue
        out.append(files[0] if len(files) == 1 else tuple(files))
        stems.append(stem)
    return out


def _mosaic_block(
    tiles: list[tuple[str, int, int, int, int]],
    rows: tuple[int, int],
    cols: tuple[int, int],
    indexes: list[int],
    dtype: str,
    fill: float,
) -> np.ndarray:
    """One chunk of a mosaic: the windows of the tiles that cover it; overlaps must agree."""
    import rasterio
    from rasterio.windows import Window

    h, w = rows[1] - rows[0], cols[1] - cols[0]
    out = np.full((len(indexes), h, w), fill, dtype=dtype)
    seen = np.zeros((h, w), dtype=np.int16)  # which tile (1-based) filled a pixel first
    for k, (path, r0, c0, th, tw) in enumerate(tiles, start=1):
        ya, yb = max(rows[0], r0), min(rows[1], r0 + th)
        xa, xb = max(cols[0], c0), min(cols[1], c0 + tw)
        if ya >= yb or xa >= xb:
            continue
        try:
            with open_gdal(path) as src:
                vals = src.read(indexes, window=Window(xa - c0, ya - r0, xb - xa, yb - ya))
        except rasterio.errors.RasterioIOError as exc:
            raise RasterReadError(
                f"{path}: pixels rows {ya - r0}:{yb - r0}, columns {xa - c0}:{xb - c0} could not be read, "
                f"the file is damaged there ({exc}). Fix: re-download or re-export it."
            ) from exc
        sl = (slice(ya - rows[0], yb - rows[0]), slice(xa - cols[0], xb - cols[0]))
        prev = seen[sl]
        twice = prev > 0
        if twice.any():
            old = out[(slice(None), *sl)]
            differ = (
                (old != vals) & ~(np.isnan(old) & np.isnan(vals)) if old.dtype.kind == "f" else old != vals
            )
            if differ[:, twice].any():
                first = tiles[int(prev[twice][0]) - 1][0]
                raise RasterReadError(
                    f"{path}: overlaps {first} with different values (mosaic rows {ya}:{yb}, columns "
                    f"{xa}:{xb}). Fix: pass tiles of one export, which never disagree."
                )
        out[(slice(None), *sl)] = vals
        seen[sl] = np.where(twice, prev, k)
    return out


def _tile_meta(f: Location | str) -> dict[str, Any]:
    """What a tile declares (CRS, transform, shape, bands, data type, nodata); no pixel is read."""
    import rasterio

    try:
        with open_gdal(f) as src:
            return {
                "crs": src.crs,
                "transform": src.transform,
                "shape": src.shape,
                "count": src.count,
                "names": _file_band_names(src.descriptions, src.count),
                "dtype": src.dtypes[0],
                "nodata": src.nodata,
            }
    except rasterio.errors.RasterioIOError as exc:
        if is_url(f):
            raise location_error(str(f), exc, "raster") from exc
        raise RasterReadError(
            f"{f}: expected a raster GDAL can read (GeoTIFF/COG), found something else ({exc}). "
            "Fix: pass a GeoTIFF."
        ) from exc


def _same_nodata(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and bool(np.isnan(a) and np.isnan(b)))


def _check_first_tile(first: Location | str, ref: Mapping[str, Any]) -> None:
    if ref["crs"] is None:
        raise RasterReadError(
            f"{first}: expected a georeferenced raster, found no CRS. Fix: assign one "
            "(e.g. gdal_edit.py -a_srs EPSG:4326)."
        )
    t0 = ref["transform"]
    if t0.b != 0 or t0.d != 0:
        raise RasterReadError(
            f"{first}: expected a north-up grid, found a rotated transform {tuple(t0)[:6]}. "
            "Fix: warp it first (gdalwarp)."
        )


def _tile_offset(
    f: Location | str, m: Mapping[str, Any], first: Location | str, ref: Mapping[str, Any]
) -> tuple[int, int]:
    """The (row, column) offset of tile ``f`` on the grid of the first tile; refuses a tile of
    another export (CRS, bands, data type, nodata, resolution, or off the pixel grid)."""
    for key, what in (
        ("crs", "CRS"),
        ("count", "band count"),
        ("names", "band names"),
        ("dtype", "data type"),
    ):
        if m[key] != ref[key]:
            raise InvalidInputError(
                f"{f}: expected the {what} of {first} ({ref[key]}), found {m[key]}. "
                "Fix: pass tiles of one export."
            )
    if not _same_nodata(m["nodata"], ref["nodata"]):
        raise InvalidInputError(
            f"{f}: expected the nodata value of {first} ({ref['nodata']}), found {m['nodata']}."
        )
    tr, t0 = m["transform"], ref["transform"]
    if abs(tr.a - t0.a) > 1e-9 * abs(t0.a) or abs(tr.e - t0.e) > 1e-9 * abs(t0.e) or tr.b or tr.d:
        raise InvalidInputError(
            f"{f}: expected the resolution of {first} ({t0.a}, {t0.e}), found ({tr.a}, {tr.e}). "
            "Fix: pass tiles of one export (or warp them onto one grid first)."
        )
    dc, dr = (tr.c - t0.c) / t0.a, (tr.f - t0.f) / t0.e
    if abs(dc - round(dc)) > 1e-6 or abs(dr - round(dr)) > 1e-6:
        raise InvalidInputError(
            f"{f}: not aligned on the pixel grid of {first}: its origin is {dr - np.floor(dr):.3f} rows "
            f"and {dc - np.floor(dc):.3f} columns off. Fix: pass tiles of one export (or warp them onto "
            "one grid)."
        )
    return round(dr), round(dc)


def _place_tiles(
    files: Sequence[Location | str], metas: Sequence[Mapping[str, Any]]
) -> tuple[list[tuple[str, int, int, int, int]], int, int, Any]:
    """Where each tile lies in the mosaic: ``(path, row, col, height, width)`` per tile, the
    mosaic's height and width and its transform. Refuses an uncovered part without nodata."""
    first, ref = files[0], metas[0]
    offsets = [_tile_offset(f, m, first, ref) for f, m in zip(files, metas, strict=True)]
    r_min = min(r for r, _ in offsets)
    c_min = min(c for _, c in offsets)
    placed = [
        (str(f), r - r_min, c - c_min, m["shape"][0], m["shape"][1])
        for f, (r, c), m in zip(files, offsets, metas, strict=True)
    ]
    height = max(r + h for _, r, _, h, _ in placed)
    width = max(c + w for _, _, c, _, w in placed)
    # pixels no tile covers: nodata (refused when the tiles declare none)
    redges = sorted({v for _, r, _, h, _ in placed for v in (r, r + h)})
    cedges = sorted({v for _, _, c, _, w in placed for v in (c, c + w)})
    cover = np.zeros((len(redges) - 1, len(cedges) - 1), dtype=bool)
    for _, r, c, h, w in placed:
        cover[redges.index(r) : redges.index(r + h), cedges.index(c) : cedges.index(c + w)] = True
    if not cover.all() and ref["nodata"] is None:
        raise InvalidInputError(
            f"{first}: the tiles leave part of their bounding rectangle uncovered and declare no nodata "
            "value for it. Fix: pass every tile of the export."
        )
    t0 = ref["transform"]
    return placed, height, width, t0 * t0.translation(c_min, r_min)


def _band_selection(
    first: Location | str,
    in_file: Sequence[str],
    count: int,
    bands: Sequence[str] | None,
    select: Sequence[str] | None,
) -> tuple[list[str], list[int]]:
    """The band names kept and their 1-based indexes in the file."""
    names = list(bands) if bands is not None else list(in_file)
    if len(names) != count:
        raise InvalidInputError(
            f"{first}: {len(names)} band names given ({', '.join(names)}) but the file has "
            f"{count} band(s). Fix: name exactly {count} bands."
        )
    if len(set(names)) != len(names):
        raise InvalidInputError(f"{first}: band names must be unique, found {names}.")
    keep = list(select) if select else names
    missing = [b for b in keep if b not in names]
    if missing:
        raise InvalidInputError(
            f"{first}: bands {missing} to select are not in the file, which has {names}. Fix: name "
            "bands that exist (see --bands for files without band names)."
        )
    return keep, [names.index(b) + 1 for b in keep]


def _mosaic_array(
    placed: list[tuple[str, int, int, int, int]],
    shape: tuple[int, int],
    indexes: list[int],
    dtype: str,
    fill: float,
    chunks: int | Mapping[str, int] | None,
) -> da.Array:
    """The lazy ``(band, y, x)`` array of a mosaic: one task per chunk, reading only its windows."""
    spec = normalize_chunks(chunks)
    ych = da.core.normalize_chunks(spec["y"], (shape[0],))[0]
    xch = da.core.normalize_chunks(spec["x"], (shape[1],))[0]
    blocks, r0 = [], 0
    for ch in ych:
        row, c0 = [], 0
        for cw in xch:
            task = dask.delayed(_mosaic_block, pure=True)(
                placed, (r0, r0 + ch), (c0, c0 + cw), indexes, dtype, fill
            )
            row.append(da.from_delayed(task, shape=(len(indexes), ch, cw), dtype=dtype))
            c0 += cw
        blocks.append(row)
        r0 += ch
    return da.block(blocks)


def open_mosaic(
    paths: Sequence[str | Path],
    *,
    bands: Sequence[str] | None = None,
    chunks: int | Mapping[str, int] | None = None,
    name: str | None = None,
    select: Sequence[str] | None = None,
    source: str | None = None,
) -> xr.DataArray:
    """Several GeoTIFFs of one grid (e.g. the tiles of an Earth Engine export) as one lazy raster.

    The tiles must share CRS, resolution, bands (names, data type, nodata) and be aligned on one
    pixel grid; the mosaic covers their union, pixels no tile covers are nodata, and where tiles
    overlap their values must agree. Each chunk reads only the windows of the tiles it needs.
    """
    from rioxarray.rioxarray import affine_to_coords

    files = [as_location(p) for p in paths]
    for f in files:
        if isinstance(f, Path) and not f.exists():
            raise InputFileNotFoundError(f"{f}: raster not found. Fix: check the path.")
    metas = [_tile_meta(f) for f in files]
    first, ref = files[0], metas[0]
    _check_first_tile(first, ref)
    placed, height, width, transform = _place_tiles(files, metas)
    keep, indexes = _band_selection(first, ref["names"], ref["count"], bands, select)
    nodata = ref["nodata"]
    fill = nodata if nodata is not None else 0
    coords = affine_to_coords(transform, width, height)
    out = xr.DataArray(
        _mosaic_array(placed, (height, width), indexes, ref["dtype"], fill, chunks),
        dims=("band", "y", "x"),
        coords={"band": np.array(keep, dtype=object), "y": coords["y"], "x": coords["x"]},
        attrs={"nodata": None if nodata is None else float(nodata), "source": source or str(first)},
        name=name or _EE_TILE.sub(r"\g<stem>", _stem(first)),
    )
    out = out.rio.write_crs(ref["crs"]).rio.write_transform(transform)
    log.info("mosaic of %d tiles: %d x %d pixels", len(files), height, width)
    return out


def grid_differences(a: xr.DataArray, b: xr.DataArray, *, rtol: float = 1e-6) -> list[str]:
    """What differs between the grids of ``a`` and ``b`` (CRS, transform, shape); empty if none."""
    out = []
    if a.rio.crs != b.rio.crs:
        out.append(f"CRS {a.rio.crs} vs {b.rio.crs}")
    ha, wa = a.sizes["y"], a.sizes["x"]
    hb, wb = b.sizes["y"], b.sizes["x"]
    if (ha, wa) != (hb, wb):
        out.append(f"shape (y, x) {(ha, wa)} vs {(hb, wb)}")
    ta, tb = a.rio.transform(), b.rio.transform()
    tol = rtol * max(abs(ta.a), abs(ta.e))
    if any(abs(p - q) > tol for p, q in zip(tuple(ta)[:6], tuple(tb)[:6], strict=True)):
        out.append(f"transform {tuple(ta)[:6]} vs {tuple(tb)[:6]}")
    return out


def require_same_grid(reference: xr.DataArray, other: xr.DataArray, *, what: str) -> None:
    """Raise :class:`GridMismatchError` naming every difference if ``other`` is off-grid."""
    diffs = grid_differences(reference, other)
    if diffs:
        src = other.attrs.get("source", what)
        ref = reference.attrs.get("source", "the imagery")
        raise GridMismatchError(
            f"{src}: expected {what} on the grid of {ref}, found differences: "
            + "; ".join(diffs)
            + f". Fix: pass --align-labels (align_labels=True in Python: nearest-neighbour resampling) "
            f"or warp the {what} onto the imagery grid first."
        )


def _warp_block(
    src: np.ndarray,
    src_transform,
    src_crs,
    dst_shape: tuple[int, int, int],
    dst_transform,
    dst_crs,
    resampling: str,
    nodata: float,
    dtype,
) -> np.ndarray:
    from rasterio.errors import NotGeoreferencedWarning

    dst = np.full(dst_shape, nodata, dtype=dtype)
    if src.size == 0:
        return dst
    with warnings.catch_warnings():
        # rasterio wraps the arrays in in-memory datasets before it sets their transforms
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        _reproject(src, dst, src_transform, src_crs, dst_transform, dst_crs, resampling, nodata)
    return dst


def _reproject(src, dst, src_transform, src_crs, dst_transform, dst_crs, resampling, nodata):
    from rasterio.enums import Resampling as R
    from rasterio.warp import reproject

    reproject(
        source=np.ascontiguousarray(src),
        destination=dst,
        src_transform=src_transform,
        src_crs=src_crs,
        src_nodata=nodata,
        dst_transform=dst_transform,
        dst_crs=dst_crs,
        dst_nodata=nodata,
        resampling=getattr(R, resampling),
        num_threads=1,
        tolerance=0.0,
    )


def align_to(
    source: xr.DataArray,
    like: xr.DataArray,
    *,
    resampling: Resampling = "bilinear",
    nodata: float | None = None,
) -> xr.DataArray:
    """Warp ``source`` onto the grid of ``like`` lazily, one task per output chunk.

    Each output chunk reads only the source window that covers it (plus a two-pixel margin for
    the resampling kernel), so a scene far larger than memory is aligned with flat memory.

    Parameters
    ----------
    source
        ``(band, y, x)`` or ``(y, x)`` raster with a CRS; numpy- or dask-backed.
    like
        Raster on the target grid; its ``y``/``x`` chunks become the output chunks.
    resampling
        ``"bilinear"`` for continuous data (radar), ``"nearest"`` for categories (labels).
    nodata
        Value marking missing source pixels and filling output pixels with no source. Defaults
        to NaN for float data and ``source.attrs["nodata"]`` (or 0) otherwise.
    """
    import rasterio.warp
    import rasterio.windows
    from affine import Affine

    if resampling not in ("nearest", "bilinear"):
        raise InvalidInputError(f"resampling: expected 'nearest' or 'bilinear', found {resampling!r}.")
    squeeze = source.ndim == 2
    src = source.expand_dims("band") if squeeze else source
    floating = np.issubdtype(src.dtype, np.floating)
    if nodata is None:
        nodata = np.nan if floating else (src.attrs.get("nodata") or 0)
    dtype = src.dtype
    src_crs, src_tr = src.rio.crs, src.rio.transform()
    dst_crs, dst_tr = like.rio.crs, like.rio.transform()
    src_h, src_w = src.sizes["y"], src.sizes["x"]
    if like.chunks is not None:
        ychunks, xchunks = like.chunksizes["y"], like.chunksizes["x"]
    else:
        ychunks, xchunks = da.core.normalize_chunks(DEFAULT_CHUNK, (like.sizes["y"], like.sizes["x"]))
    data = src.data
    nb = src.sizes["band"]
    rows = []
    r0 = 0
    for h in ychunks:
        row = []
        c0 = 0
        for w in xchunks:
            tr = dst_tr @ Affine.translation(c0, r0)
            left, top = tr @ (0, 0)
            right, bottom = tr @ (w, h)
            bounds = rasterio.warp.transform_bounds(
                dst_crs,
                src_crs,
                min(left, right),
                min(top, bottom),
                max(left, right),
                max(top, bottom),
                densify_pts=21,
            )
            win = rasterio.windows.from_bounds(*bounds, transform=src_tr)
            ys = max(int(np.floor(win.row_off)) - 2, 0)
            ye = min(int(np.ceil(win.row_off + win.height)) + 2, src_h)
            xs = max(int(np.floor(win.col_off)) - 2, 0)
            xe = min(int(np.ceil(win.col_off + win.width)) + 2, src_w)
            piece = data[:, ys : max(ye, ys), xs : max(xe, xs)]
            block = dask.delayed(_warp_block, pure=True)(
                piece,
                src_tr @ Affine.translation(xs, ys),
                src_crs,
                (nb, h, w),
                tr,
                dst_crs,
                resampling,
                nodata,
                dtype,
            )
            row.append(da.from_delayed(block, shape=(nb, h, w), dtype=dtype))
            c0 += w
        rows.append(row)
        r0 += h
    out = da.block(rows)
    result = xr.DataArray(
        out,
        dims=("band", "y", "x"),
        coords={"band": src["band"].values, "y": like["y"].values, "x": like["x"].values},
        name=source.name,
        attrs={**source.attrs, "nodata": None if floating and np.isnan(nodata) else nodata},
    )
    result = result.rio.write_crs(dst_crs).rio.write_transform(dst_tr)
    return result.isel(band=0, drop=True) if squeeze else result


def _aux_xml(values: list[int], names: list[str], *, categories: bool) -> str:
    """GDAL's side-car: category names (for id maps) and a thematic raster attribute table."""
    from xml.sax.saxutils import escape

    cats = ""
    if categories:  # indexed by pixel value: only for small values (training ids)
        cats = (
            "    <CategoryNames>"
            + "".join(f"<Category>{escape(n)}</Category>" for n in names)
            + "</CategoryNames>\n"
        )
    fields = (
        '      <FieldDefn index="0"><Name>Value</Name><Type>0</Type><Usage>5</Usage></FieldDefn>\n'
        '      <FieldDefn index="1"><Name>Class</Name><Type>2</Type><Usage>2</Usage></FieldDefn>\n'
    )
    rows = "".join(
        f'      <Row index="{i}"><F>{v}</F><F>{escape(n)}</F></Row>\n'
        for i, (v, n) in enumerate(zip(values, names, strict=True))
    )
    return (
        '<PAMDataset>\n  <PAMRasterBand band="1">\n'
        + cats
        + '    <GDALRasterAttributeTable tableType="thematic">\n'
        + fields
        + rows
        + "    </GDALRasterAttributeTable>\n  </PAMRasterBand>\n</PAMDataset>\n"
    )


def qgis_style(values: list[int], names: list[str], colors: list[str]) -> str:
    """A QGIS layer style (``.qml``): a paletted renderer with the legend's names and colours."""
    from xml.sax.saxutils import quoteattr

    entries = "".join(
        f"        <paletteEntry value={quoteattr(str(v))} color={quoteattr(c)} "
        f'label={quoteattr(n)} alpha="255"/>\n'
        for v, n, c in zip(values, names, colors, strict=True)
    )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28" styleCategories="AllStyleCategories">\n  <pipe>\n'
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">\n'
        f"      <colorPalette>\n{entries}      </colorPalette>\n"
        "    </rasterrenderer>\n  </pipe>\n</qgis>\n"
    )


def _write_cog(
    path: Location,
    data: da.Array,
    profile: dict,
    *,
    prepare: Callable[[np.ndarray], np.ndarray],
    resampling: str,
    finish: Callable[[Any], None],
    side_files: dict[str, str],
    overwrite: bool,
) -> Location:
    """A COG from a ``(band, y, x)`` dask array: rows of chunks written one at a time (flat memory),
    overviews, then ``finish(dataset)`` (colour table, descriptions, tags), the COG copy, and side
    files (``{suffix: text}``) beside it; all of them written through the output set (in a
    stage, they are committed or undone with the run's other outputs)."""
    import rasterio
    import rasterio.shutil
    from rasterio.enums import Resampling as R
    from rasterio.windows import Window

    h, w = profile["height"], profile["width"]
    blocksize = profile["blockxsize"]
    factors = [f for f in (2, 4, 8, 16, 32, 64, 128) if max(h, w) / f >= blocksize / 2]
    sides = {
        suffix: path.with_name(path.name + suffix) if suffix == ".aux.xml" else path.with_suffix(suffix)
        for suffix in side_files
    }
    with contextlib.ExitStack() as stack:  # every file through the output set: one set with the run's
        cog = stack.enter_context(atomic_output(path, overwrite=overwrite))
        # GDAL's own sidecar of the map is the map's: replaced with it
        tmp = {
            s: stack.enter_context(atomic_output(p, overwrite=overwrite or s == ".aux.xml"))
            for s, p in sides.items()
        }
        work = cog.with_name(cog.name + ".work")  # a temporary of the map: a later run removes it
        work.mkdir()
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        plain = work / "plain.tif"
        with rasterio.open(plain, "w", **profile) as dst:
            y0 = 0
            for ch in data.chunks[1]:
                dst.write(prepare(np.asarray(data[:, y0 : y0 + ch].compute())), window=Window(0, y0, w, ch))
                y0 += ch
            if factors:  # before any palette: GDAL warns about palette bands in update mode
                dst.build_overviews(factors, getattr(R, resampling))
        with rasterio.open(plain, "r+") as dst:
            finish(dst)
        options = {"PREDICTOR": "YES"} if profile["dtype"].startswith("float") else {}
        rasterio.shutil.copy(
            plain,
            work / "cog.tif",
            driver="COG",
            COMPRESS="DEFLATE",
            BLOCKSIZE=blocksize,
            OVERVIEWS="FORCE_USE_EXISTING",
            BIGTIFF="IF_SAFER",
            **options,
        )
        (work / "cog.tif").rename(cog)
        for suffix, text in side_files.items():
            tmp[suffix].write_text(text)
    return path


def _profile(grid: xr.DataArray, count: int, dtype: str, nodata: float, blocksize: int) -> dict:
    return {
        "driver": "GTiff",
        "count": count,
        "dtype": dtype,
        "height": grid.sizes["y"],
        "width": grid.sizes["x"],
        "crs": grid.rio.crs,
        "transform": grid.rio.transform(),
        "nodata": nodata,
        "tiled": True,
        "blockxsize": blocksize,
        "blockysize": blocksize,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }


def write_cog(
    classes: xr.DataArray,
    path: str | os.PathLike,
    *,
    legend,
    values: Literal["ids", "codes"] = "ids",
    overwrite: bool = False,
    blocksize: int = 512,
) -> Location:
    """Write a class map as a tiled Cloud-Optimised GeoTIFF that GIS tools show with names and colours.

    Deflate-compressed, nodata 0, overviews by mode (the majority class, so categories stay
    categories), the legend's colours as the colour table, the class names in a raster attribute
    table (``<path>.aux.xml``, where GDAL keeps it for GeoTIFF; id maps also get GDAL category
    names) and in a QGIS style beside the file (``<stem>.qml``, a paletted renderer QGIS applies
    on opening). ``values="ids"`` writes training ids (uint8); ``"codes"`` the legend's original
    codes (KLHK 2001..50011, uint16 or uint32). The map is computed one row of chunks at a time,
    so memory stays flat; the files are written beside the target and moved into place.
    """
    import json

    if values not in ("ids", "codes"):
        raise InvalidInputError(f"values: expected 'ids' or 'codes', found {values!r}.")
    target = as_location(path)
    for out in (target, target.with_suffix(".qml")):
        check_output(out, overwrite=overwrite)
    data = classes.data if isinstance(classes.data, da.Array) else da.from_array(np.asarray(classes.data))
    codes = values == "codes"
    lut = np.asarray([0, *(legend.values if codes else legend.ids)], dtype=np.int64)
    dtype = "uint8" if lut.max() < 256 else "uint16" if lut.max() < 65536 else "uint32"
    names = ["nodata", *legend.names]
    colormap = {0: (0, 0, 0, 0)} | {
        int(lut[i]): (*[int(v) for v in legend.rgb[i]], 255) for i in range(1, legend.n_classes + 1)
    }

    def finish(dst) -> None:
        if dtype != "uint32":  # GeoTIFF keeps colour tables for 8- and 16-bit bands
            dst.write_colormap(1, colormap)
        dst.set_band_description(1, "class code" if codes else "class")
        dst.update_tags(CLASS_NAMES=json.dumps(names), LEGEND=legend.to_json(), CLASS_VALUES=values)

    return _write_cog(
        target,
        data[None],
        _profile(classes, 1, dtype, 0, blocksize),
        prepare=lambda block: lut[np.clip(block.astype(np.int64), 0, legend.n_classes)].astype(dtype),
        resampling="mode",
        finish=finish,
        side_files={
            ".aux.xml": _aux_xml(lut.tolist(), names, categories=not codes),
            ".qml": qgis_style(lut[1:].tolist(), list(legend.names), list(legend.colors)),
        },
        overwrite=overwrite,
    )


def write_image_cog(
    image: xr.DataArray, path: str | os.PathLike, *, overwrite: bool = False, blocksize: int = 512
) -> Location:
    """Write ``(band, y, x)`` imagery as a float32 COG with band descriptions (the band names).

    Deflate with the floating-point predictor, NaN as nodata, overviews by average; one row of
    chunks in memory at a time; written beside the target and moved into place.
    """
    target = as_location(path)
    check_output(target, overwrite=overwrite)
    image = image.transpose("band", "y", "x")
    data = image.data if isinstance(image.data, da.Array) else da.from_array(np.asarray(image.data))
    bands = [str(b) for b in image["band"].values]

    def finish(dst) -> None:
        for i, name in enumerate(bands, start=1):
            dst.set_band_description(i, name)

    return _write_cog(
        target,
        data,
        _profile(image, len(bands), "float32", float("nan"), blocksize),
        prepare=lambda block: block.astype(np.float32),
        resampling="average",
        finish=finish,
        side_files={},
        overwrite=overwrite,
    )
