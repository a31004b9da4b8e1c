"""Lazy raster IO: open GeoTIFF/COG as chunked DataArrays, check grids, align other grids lazily."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import rioxarray
import xarray as xr

from ._outputs import check_output
from .errors import GridMismatchError, InputFileNotFoundError, InvalidInputError, RasterReadError

__all__ = [
    "DEFAULT_CHUNK",
    "Resampling",
    "align_to",
    "grid_differences",
    "normalize_chunks",
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
    path: str | Path,
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
        Raster file readable by GDAL.
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
    import rasterio

    path = Path(path)
    if not path.exists():
        raise InputFileNotFoundError(f"{path}: raster not found. Fix: check the path.")
    try:
        with rasterio.open(path) as src:
            count, descriptions, nodata = src.count, src.descriptions, src.nodata
            crs, transform = src.crs, src.transform
    except rasterio.errors.RasterioIOError as exc:
        raise RasterReadError(
            f"{path}: expected a raster GDAL can read (GeoTIFF/COG), found something else ({exc}). "
            "Fix: pass a GeoTIFF."
        ) from exc
    if crs is None:
        raise RasterReadError(
            f"{path}: expected a georeferenced raster, found no CRS. Fix: assign one "
            "(e.g. gdal_edit.py -a_srs EPSG:4326)."
        )
    if transform.b != 0 or transform.d != 0:
        raise RasterReadError(
            f"{path}: expected a north-up grid, found a rotated transform {tuple(transform)[:6]}. "
            "Fix: warp it first (gdalwarp)."
        )
    names = list(bands) if bands is not None else _file_band_names(descriptions, count)
    if len(names) != count:
        raise InvalidInputError(
            f"{path}: {len(names)} band names given ({', '.join(names)}) but the file has "
            f"{count} band(s). Fix: name exactly {count} bands."
        )
    if len(set(names)) != len(names):
        raise InvalidInputError(f"{path}: band names must be unique, found {names}.")
    spec = normalize_chunks(chunks) | ({"band": 1} if select else {})  # band by band: skipped bands unread
    da_ = rioxarray.open_rasterio(path, chunks=spec, lock=False, cache=False, masked=False)
    assert isinstance(da_, xr.DataArray)  # a single-subdataset GeoTIFF; not user input
    da_ = da_.assign_coords(band=np.array(names, dtype=object))
    if select:
        missing = [b for b in select if b not in names]
        if missing:
            raise InvalidInputError(
                f"{path}: bands {missing} to select are not in the file, which has {names}. Fix: name "
                "bands that exist (see --bands for files without band names)."
            )
        da_ = da_.sel(band=list(select)).chunk({"band": -1})
    attrs = {"nodata": None if nodata is None else float(nodata), "source": str(path)}
    da_.attrs = attrs
    da_.encoding.pop("_FillValue", None)
    return da_.rename(name or path.stem)


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
    path: Path,
    data: da.Array,
    profile: dict,
    *,
    prepare: Callable[[np.ndarray], np.ndarray],
    resampling: str,
    finish: Callable[[Any], None],
    side_files: dict[str, str],
) -> Path:
    """A COG from a ``(band, y, x)`` dask array: rows of chunks written one at a time (flat memory),
    overviews, then ``finish(dataset)`` (colour table, descriptions, tags), the COG copy, and side
    files (``{suffix: text}``) moved into place beside it."""
    import shutil
    import tempfile

    import rasterio
    import rasterio.shutil
    from rasterio.enums import Resampling as R
    from rasterio.windows import Window

    h, w = profile["height"], profile["width"]
    blocksize = profile["blockxsize"]
    factors = [f for f in (2, 4, 8, 16, 32, 64, 128) if max(h, w) / f >= blocksize / 2]
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmpdir:
        plain = Path(tmpdir) / "plain.tif"
        with rasterio.open(plain, "w", **profile) as dst:
            y0 = 0
            for ch in data.chunks[1]:
                dst.write(prepare(np.asarray(data[:, y0 : y0 + ch].compute())), window=Window(0, y0, w, ch))
                y0 += ch
            if factors:  # before any palette: GDAL warns about palette bands in update mode
                dst.build_overviews(factors, getattr(R, resampling))
        with rasterio.open(plain, "r+") as dst:
            finish(dst)
        cog = Path(tmpdir) / "cog.tif"
        options = {"PREDICTOR": "YES"} if profile["dtype"].startswith("float") else {}
        rasterio.shutil.copy(
            plain,
            cog,
            driver="COG",
            COMPRESS="DEFLATE",
            BLOCKSIZE=blocksize,
            OVERVIEWS="FORCE_USE_EXISTING",
            BIGTIFF="IF_SAFER",
            **options,
        )
        for suffix, text in side_files.items():
            (Path(tmpdir) / f"side{suffix}").write_text(text)
        if path.exists():
            path.unlink()
        for suffix in side_files:
            target = path.with_name(path.name + suffix) if suffix == ".aux.xml" else path.with_suffix(suffix)
            shutil.move(str(Path(tmpdir) / f"side{suffix}"), str(target))
        cog.replace(path)
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
    path: str | Path,
    *,
    legend,
    values: Literal["ids", "codes"] = "ids",
    overwrite: bool = False,
    blocksize: int = 512,
) -> Path:
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
    path = Path(path)
    for out in (path, path.with_suffix(".qml")):
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
        path,
        data[None],
        _profile(classes, 1, dtype, 0, blocksize),
        prepare=lambda block: lut[np.clip(block.astype(np.int64), 0, legend.n_classes)].astype(dtype),
        resampling="mode",
        finish=finish,
        side_files={
            ".aux.xml": _aux_xml(lut.tolist(), names, categories=not codes),
            ".qml": qgis_style(lut[1:].tolist(), list(legend.names), list(legend.colors)),
        },
    )


def write_image_cog(
    image: xr.DataArray, path: str | Path, *, overwrite: bool = False, blocksize: int = 512
) -> Path:
    """Write ``(band, y, x)`` imagery as a float32 COG with band descriptions (the band names).

    Deflate with the floating-point predictor, NaN as nodata, overviews by average; one row of
    chunks in memory at a time; written beside the target and moved into place.
    """
    path = Path(path)
    check_output(path, overwrite=overwrite)
    image = image.transpose("band", "y", "x")
    data = image.data if isinstance(image.data, da.Array) else da.from_array(np.asarray(image.data))
    bands = [str(b) for b in image["band"].values]

    def finish(dst) -> None:
        for i, name in enumerate(bands, start=1):
            dst.set_band_description(i, name)

    return _write_cog(
        path,
        data,
        _profile(image, len(bands), "float32", float("nan"), blocksize),
        prepare=lambda block: block.astype(np.float32),
        resampling="average",
        finish=finish,
        side_files={},
    )
