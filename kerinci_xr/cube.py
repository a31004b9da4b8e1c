"""The analysis-ready cube: built lazily from rasters, one Zarr v3 store per scene, written atomically."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from . import io as kio
from ._locations import absolute, as_location, open_gdal
from ._objects import read_store
from ._outputs import atomic_store
from ._products import PRODUCTS, Kind, locate, zarr_store
from .cluster import compute
from .errors import InvalidInputError, RasterReadError
from .legend import Legend
from .preprocess import band_roles, parse_band_roles, remap_labels, scale_values, valid_mask
from .vector import is_vector, rasterize_reference, read_reference

__all__ = [
    "EXPORT_SCALE",
    "build_cube",
    "build_series",
    "checked_reads",
    "consolidated",
    "cube_legend",
    "cube_view",
    "dates_of",
    "file_date",
    "open_cube",
    "reference_layers",
    "write_cube",
]

log = logging.getLogger(__name__)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("kerinci_xr", "xarray", "dask", "zarr", "rioxarray", "rasterio", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


#: The scale of reflectance stored as integers x1e4 (Earth Engine exports, the Kerinci rasters).
EXPORT_SCALE = 1e-4


def _as_raster(obj: str | Path | xr.DataArray, *, bands, chunks, select=None) -> xr.DataArray:
    if isinstance(obj, xr.DataArray) and select:
        return _as_raster(obj, bands=bands, chunks=chunks).sel(band=list(select))
    if isinstance(obj, xr.DataArray):
        da_ = obj if "band" in obj.dims else obj.expand_dims(band=["band_1"])
        if bands is not None:
            if len(bands) != da_.sizes["band"]:
                raise InvalidInputError(
                    f"{obj.name}: {len(bands)} band names given but the array has "
                    f"{da_.sizes['band']} band(s)."
                )
            da_ = da_.assign_coords(band=list(bands))
        return da_.chunk(kio.normalize_chunks(chunks))
    return kio.open_raster(obj, bands=bands, chunks=chunks, select=select)


def build_cube(
    image: str | Path | tuple[Path, ...] | xr.DataArray,
    labels: str | Path | xr.DataArray | None = None,
    *,
    legend: Legend | None = None,
    radar: str | Path | xr.DataArray | None = None,
    bands: Sequence[str] | None = None,
    radar_bands: Sequence[str] | None = ("HH", "HV"),
    scale: float | None = None,
    offset: float | None = None,
    nodata: float | None = None,
    radar_scale: float = 1e-3,
    radar_nodata: float | None = None,
    align_labels: bool = False,
    chunks: int | Mapping[str, int] | None = kio.DEFAULT_CHUNK,
    sensor: str = "auto",
    select: Sequence[str] | None = None,
    roles: Sequence[str] | None = None,
    label_field: str = "lc",
    strict: bool = False,
    mask: str | Path | xr.DataArray | None = None,
    mask_band: str | None = None,
    mask_kind: str = "fmask",
    mask_values: Sequence[int] = (),
) -> xr.Dataset:
    """Build the lazy analysis-ready cube from imagery, optional labels and optional radar.

    Nothing is computed: opening, alignment, scaling and remapping only build a dask graph.

    Parameters
    ----------
    image
        Optical raster (path or ``(band, y, x)`` DataArray with a CRS); it defines the grid.
    labels
        Label raster with the legend's original codes, on the image grid; or a vector file of
        labelled points/polygons (GeoJSON, GeoPackage, Shapefile, GeoParquet; see
        :mod:`kerinci_xr.vector`), rasterised lazily onto the image grid.
    legend
        Required with ``labels``: the remap from original codes to training ids.
    radar
        Second sensor on any grid (e.g. ALOS PALSAR HH/HV in dB x1e3); aligned bilinearly.
    bands, radar_bands
        Band names for the optical and radar files (default: from the file, then
        ``("HH", "HV")`` for radar when the file has as many bands).
    scale, offset
        Optical scaling: ``1e-4`` for reflectance x1e4 (the default, :data:`EXPORT_SCALE`: the
        convention of Earth Engine exports), ``1/255`` for 8-bit DN; offset 0 by default.
    nodata, radar_nodata
        Override the nodata values declared in the files.
    radar_scale
        ``1e-3`` for dB x1e3; ``1.0`` for radar already in dB.
    align_labels
        Warp labels that are not on the image grid (nearest neighbour) instead of refusing them.
    chunks
        Spatial chunk edge (pixels) of the cube; all bands share a chunk.
    sensor
        ``"auto"``, ``"landsat8"``, ``"landsat7"`` or ``"sentinel2"``: which bands play which role.
    select
        Keep only these optical bands (the others are never read).
    roles
        Band roles where the sensor cannot be recognised, ``("nir=B4", "swir1=B5", ...)``.
    label_field, strict
        Vector labels: the attribute holding the codes (or class names); ``strict`` makes
        features outside the image, with broken geometry or unknown codes an error.
    mask, mask_band, mask_kind, mask_values
        A cloud/quality mask: a one-band raster on any grid (aligned nearest), or ``mask_band``,
        a band of the image (then not a feature). ``mask_kind``: ``"fmask"`` (clear where 0,
        land, or 1, water), ``"qa_pixel"`` (Landsat Collection 2 QA_PIXEL: clear where the
        fill, dilated cloud, cirrus, cloud, cloud shadow and snow bits 0-5 are all 0) or
        ``"values"`` (clear where the value is one of ``mask_values``). Pixels not clear are
        invalid: no sample, no training pixel, no map class.

    Returns
    -------
    xarray.Dataset
        ``image`` (band, y, x) float32 with NaN where invalid, ``valid`` (y, x) bool,
        ``labels`` (y, x) uint8 training ids (if labels were given), with vector labels also
        ``reference_id`` (y, x) and the feature table ``feature_*`` (feature), CRS via ``.rio``, and
        ``legend``, ``band_roles`` and ``provenance`` (JSON strings) in attrs.
    """
    chunks = kio.normalize_chunks(chunks)
    if labels is not None and legend is None:
        raise InvalidInputError("labels given without a legend. Fix: pass legend=read_legend(...).")
    raw = _as_raster(image, bands=bands, chunks=chunks, select=select if mask_band is None else None)
    if raw.rio.crs is None:
        raise RasterReadError(f"{raw.attrs.get('source', 'image')}: the image has no CRS.")
    raw, clear = _clear_mask(raw, mask, mask_band, mask_kind, mask_values, select=select, chunks=chunks)
    nodata = raw.attrs.get("nodata") if nodata is None else nodata
    _check_nodata(nodata, raw, "--nodata")
    scale = EXPORT_SCALE if scale is None else scale
    offset = 0.0 if offset is None else offset
    optical = scale_values(raw, scale=scale, offset=offset, nodata=nodata)
    inputs: dict[str, Any] = {"image": str(raw.attrs.get("source", "<memory>"))}
    img = optical
    if radar is not None:
        rdb, inputs["radar"] = _radar_layer(
            radar, raw, optical, bands=radar_bands, scale=radar_scale, nodata=radar_nodata, chunks=chunks
        )
        img = xr.concat([optical, rdb], dim="band", combine_attrs="drop")
    img = img.chunk({"band": -1}).rename("image")
    img.attrs = {
        "long_name": "surface reflectance (optical bands), backscatter in dB (radar bands)",
        "units": "1",
    }
    valid = (valid_mask(raw, nodata=nodata) & img.notnull().all("band")).rename("valid")
    if clear is not None:
        valid = (valid & clear).rename("valid")
        img = img.where(clear).astype(np.float32)
        img.attrs = {
            "long_name": "surface reflectance (optical bands), backscatter in dB (radar bands)",
            "units": "1",
        }
        inputs["mask"] = f"{mask_band or clear.attrs.get('source', '<memory>')} ({mask_kind})"
    valid.attrs = {
        "long_name": "valid pixel: every band present",
        "flag_values": [0, 1],
        "flag_meanings": "invalid valid",
    }
    data_vars: dict[str, xr.DataArray] = {"image": img, "valid": valid}
    if labels is not None:
        assert legend is not None
        layers, inputs["labels"] = _label_layers(
            labels,
            raw,
            optical,
            legend=legend,
            align=align_labels,
            label_field=label_field,
            strict=strict,
            chunks=chunks,
        )
        data_vars |= layers
    ds = xr.Dataset(data_vars)
    ds = ds.rio.write_crs(raw.rio.crs).rio.write_transform(raw.rio.transform())
    names = [str(b) for b in img["band"].values]
    provenance = {
        "inputs": inputs,
        "scale": scale,
        "offset": offset,
        "nodata": nodata,
        "radar_scale": radar_scale if radar is not None else None,
        "align_labels": align_labels,
    }
    if "reference_id" in data_vars:
        provenance["reference"] = json.loads(data_vars["reference_id"].attrs["reference_report"])
    ds.attrs = {
        "title": "kerinci_xr analysis-ready cube",
        "legend": legend.to_json() if legend is not None else "",
        "band_roles": json.dumps(band_roles(names, sensor=sensor) | parse_band_roles(roles, names)),
        "provenance": json.dumps(
            provenance
            | {"created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "versions": _versions()}
        ),
    }
    return ds


MASK_KINDS = ("fmask", "qa_pixel", "values")
#: Landsat Collection 2 QA_PIXEL bits that make a pixel unusable: fill, dilated cloud, cirrus,
#: cloud, cloud shadow, snow (bits 0-5)
QA_PIXEL_BAD = 0b111111


def _clear_mask(
    raw: xr.DataArray,
    mask: str | Path | xr.DataArray | None,
    band: str | None,
    kind: str,
    values: Sequence[int],
    *,
    select: Sequence[str] | None,
    chunks: Mapping[str, int],
) -> tuple[xr.DataArray, xr.DataArray | None]:
    """The optical raster without its mask band, and where the mask says clear (``None``: no mask)."""
    if mask is None and band is None:
        return raw, None
    if mask is not None and band is not None:
        raise InvalidInputError("--mask and --mask-band: pass one of them.")
    if kind not in MASK_KINDS:
        raise InvalidInputError(f"mask_kind: expected one of {MASK_KINDS}, found {kind!r}.")
    if kind == "values" and not values:
        raise InvalidInputError("--mask-kind values needs --mask-values (the codes of clear pixels).")
    names = [str(b) for b in raw["band"].values]
    if band is not None:
        if band not in names:
            raise InvalidInputError(
                f"{raw.attrs.get('source', 'image')}: --mask-band {band!r} is not a band of the image "
                f"(its bands: {names}). Fix: name one of them."
            )
        m = raw.sel(band=band, drop=True)
        keep = [b for b in names if b != band and (select is None or b in select)]
        raw = raw.sel(band=keep)
    else:
        mraw = _as_raster(mask, bands=None, chunks=chunks)
        if mraw.sizes["band"] != 1:
            raise InvalidInputError(
                f"{mraw.attrs.get('source', 'mask')}: expected a one-band mask, found "
                f"{mraw.sizes['band']} bands. Fix: pass the QA/Fmask band alone, or --mask-band."
            )
        _check_overlap(raw, mraw, "mask")
        m = mraw.isel(band=0, drop=True)
        if kio.grid_differences(raw, mraw):
            m = kio.align_to(mraw, raw.isel(band=[0]), resampling="nearest").isel(band=0, drop=True)
        else:
            m = m.assign_coords(y=raw["y"], x=raw["x"])
    if kind == "fmask":
        clear = m.isin([0, 1])
    elif kind == "qa_pixel":
        clear = (m.astype(np.int64) & QA_PIXEL_BAD) == 0
    else:
        clear = m.isin(list(values))
    clear.attrs["source"] = str((mask if mask is not None else band) or "")
    return raw, clear.chunk({k: v for k, v in chunks.items() if k in clear.dims}).rename("clear")


def _radar_layer(
    radar: str | Path | xr.DataArray,
    raw: xr.DataArray,
    optical: xr.DataArray,
    *,
    bands: Sequence[str] | None,
    scale: float,
    nodata: float | None,
    chunks: Mapping[str, int],
) -> tuple[xr.DataArray, str]:
    """The radar bands in dB on the optical grid (aligned bilinearly when on another grid), and
    where they came from."""
    rraw = _as_raster(radar, bands=None, chunks=chunks)
    _check_overlap(raw, rraw, "radar")
    _check_nodata(nodata, rraw, "radar nodata")
    if (
        bands is not None
        and not isinstance(radar, xr.DataArray)
        and len(bands) == rraw.sizes["band"]
        and all(b.startswith("band_") for b in rraw["band"].values)
    ):
        rraw = rraw.assign_coords(band=list(bands))
    rdb = scale_values(rraw, scale=scale, offset=0.0, nodata=nodata)
    if kio.grid_differences(raw, rdb):
        rdb = kio.align_to(rdb, optical, resampling="bilinear")
    else:
        rdb = rdb.assign_coords(y=optical["y"], x=optical["x"])
    clash = set(rdb["band"].values) & set(optical["band"].values)
    if clash:
        raise InvalidInputError(
            f"radar band names {sorted(clash)} clash with optical band names. "
            "Fix: rename the radar bands (--radar-bands; radar_bands=... in Python)."
        )
    return rdb.chunk(chunks), str(rraw.attrs.get("source", "<memory>"))


def _label_layers(
    labels: str | Path | xr.DataArray,
    raw: xr.DataArray,
    optical: xr.DataArray,
    *,
    legend: Legend,
    align: bool,
    label_field: str,
    strict: bool,
    chunks: Mapping[str, int],
) -> tuple[dict[str, xr.DataArray], str]:
    """The cube's reference layers (``labels``, and for vector references ``reference_id`` and the
    feature table) on the image grid, and where they came from."""
    if is_vector(labels):
        assert not isinstance(labels, xr.DataArray)
        layers = reference_layers(
            labels, optical, legend=legend, label_field=label_field, strict=strict, chunks=chunks
        )
        return layers, " + ".join(map(str, labels)) if isinstance(labels, list | tuple) else str(labels)
    lraw = _as_raster(labels, bands=None, chunks=chunks)
    if lraw.sizes["band"] != 1:
        raise RasterReadError(
            f"{lraw.attrs.get('source', 'labels')}: expected a single-band label raster, "
            f"found {lraw.sizes['band']} bands."
        )
    lraw = lraw.isel(band=0, drop=True)
    if kio.grid_differences(raw, lraw):
        if not align:
            kio.require_same_grid(raw, lraw, what="labels")
        _check_overlap(raw, lraw, "labels")
        lraw = kio.align_to(lraw, optical, resampling="nearest")
    else:
        lraw = lraw.assign_coords(y=optical["y"], x=optical["x"])
    return {"labels": remap_labels(lraw, legend)}, str(lraw.attrs.get("source", "<memory>"))


def reference_layers(
    path: str | Path,
    grid: xr.DataArray,
    *,
    legend: Legend,
    label_field: str = "lc",
    strict: bool = False,
    chunks: Mapping[str, int] | None = None,
) -> dict[str, xr.DataArray]:
    """Vector labels on ``grid``: ``labels``, ``reference_id`` and the feature table, lazily."""
    tr = grid.rio.transform()
    shape = (grid.sizes["y"], grid.sizes["x"])
    feats = read_reference(
        path, label_field, crs=grid.rio.crs, transform=tr, shape=shape, legend=legend, strict=strict
    )
    ch = kio.normalize_chunks(chunks)
    yx = xr.DataArray(np.empty(shape, dtype=np.uint8), dims=("y", "x")).chunk({"y": ch["y"], "x": ch["x"]})
    labels, ids = rasterize_reference(feats, yx.data.chunks)
    coords = {"y": grid["y"], "x": grid["x"]}
    out = {
        "labels": xr.DataArray(
            labels,
            dims=("y", "x"),
            coords=coords,
            attrs=legend.cf_attrs("reference land-cover class (training id)"),
        ),
        "reference_id": xr.DataArray(
            ids,
            dims=("y", "x"),
            coords=coords,
            attrs={
                "long_name": "reference feature labelling the pixel (feature_* table; 0 = none)",
                "source": str(path),
                "reference_report": json.dumps(feats.report),
            },
        ),
    }
    t = feats.table
    for col in ("kind", "code", "class_id", "x", "y", "row", "col", "source_index"):
        out[f"feature_{col}"] = xr.DataArray(t[col].to_numpy(), dims="feature")
    out["feature_kind"].attrs = {"flag_values": [0, 1, 2], "flag_meanings": "point polygon multipoint"}
    out["feature_x"].attrs = {"long_name": "the point, or a point inside the polygon (cube CRS)"}
    return {
        k: v.assign_coords(feature=t["feature"].to_numpy()) if "feature" in v.dims else v
        for k, v in out.items()
    }


def _check_nodata(nodata: float | None, raw: xr.DataArray, what: str) -> None:
    """A nodata value must be one the pixels can hold (an integer in range for integer rasters)."""
    if nodata is None or np.isnan(nodata):
        return
    src = raw.attrs.get("source", "the raster")
    if not np.isfinite(nodata):
        raise InvalidInputError(
            f"{src}: {what} {nodata} is not a pixel value. Fix: a finite number (or none)."
        )
    if np.issubdtype(raw.dtype, np.integer):
        info = np.iinfo(raw.dtype)
        if not (float(nodata).is_integer() and info.min <= nodata <= info.max):
            raise InvalidInputError(
                f"{src}: {what} {nodata} cannot occur in {raw.dtype} pixels (integers "
                f"{info.min}..{info.max}). Fix: a value of the file's type, e.g. {max(info.min, 0)}."
            )


def _check_overlap(image: xr.DataArray, other: xr.DataArray, what: str) -> None:
    """Refuse a second raster whose footprint misses the image's altogether."""
    import rasterio.warp

    ob = rasterio.warp.transform_bounds(other.rio.crs, image.rio.crs, *other.rio.bounds(), densify_pts=21)
    ib = image.rio.bounds()
    if ob[0] >= ib[2] or ob[2] <= ib[0] or ob[1] >= ib[3] or ob[3] <= ib[1]:
        raise InvalidInputError(
            f"{other.attrs.get('source', what)}: the {what} do not overlap the image "
            f"{image.attrs.get('source', '')} (bounds {tuple(round(v, 6) for v in ob)} vs "
            f"{tuple(round(v, 6) for v in ib)} in the image's CRS). Fix: pass the {what} of this area."
        )


def check_content(store: Any) -> None:
    """Refuse a written cube (a folder or an Icechunk store) with no valid pixel, or labels
    without one labelled pixel."""
    ds = xr.open_zarr(store, consolidated=consolidated(store))
    valid = float(ds["valid"].mean().compute())
    if valid == 0:
        raise InvalidInputError(
            "the cube has no valid pixel: every pixel is nodata, NaN or infinite in some band. Fix: check "
            "--nodata, --scale/--offset and that the image holds data."
        )
    if "labels" in ds:
        labelled = int(
            ((ds["labels"] > 0) & (ds["valid"].any("time") if "time" in ds["valid"].dims else ds["valid"]))
            .sum()
            .compute()
        )
        if labelled == 0:
            raise InvalidInputError(
                "the labels hold no class on any valid pixel (outside the image, all nodata, or codes "
                "missing from the legend). Fix: check the labels' footprint, their codes and the legend."
            )


def cube_legend(ds: xr.Dataset) -> Legend:
    """The legend stored in a cube's attrs."""
    text = ds.attrs.get("legend", "")
    if not text:
        raise InvalidInputError(
            "the cube has no legend (it was built without labels). Fix: rebuild it with "
            "--labels and --legend."
        )
    return Legend.from_json(text, source="cube attrs")


def _encoding(ds: xr.Dataset, clevel: int, zarr_format: int) -> dict[str, dict]:
    import numcodecs
    from zarr.codecs import BloscCodec

    enc = {}
    for name, var in ds.data_vars.items():
        bitshuffle = var.dtype.itemsize == 1
        if zarr_format == 2:
            shuffle = numcodecs.Blosc.BITSHUFFLE if bitshuffle else numcodecs.Blosc.SHUFFLE
            codec: Any = numcodecs.Blosc(cname="zstd", clevel=clevel, shuffle=shuffle)
        else:
            codec = BloscCodec(cname="zstd", clevel=clevel, shuffle="bitshuffle" if bitshuffle else "shuffle")
        enc[name] = {"compressors": (codec,)}
        if var.chunks is not None:
            enc[name]["chunks"] = tuple(c[0] for c in var.chunks)
    return enc


def _georeferenced(ds: xr.Dataset) -> xr.Dataset:
    """CF and GDAL georeferencing on every layer: ``grid_mapping``, ``_CRS``, x/y attributes."""
    out = ds.rio.write_coordinate_system()  # CF standard_name/units on x and y
    # strings as fixed-width unicode: GDAL's Zarr driver (and QGIS) refuse variable-length ones
    # ("Invalid or unsupported format for dtype: |O") on every open
    text = {
        name: np.asarray([str(v) for v in var.values.ravel()]).reshape(var.shape)
        for name, var in out.variables.items()
        if var.dtype.kind in "OTU" and var.size
    }
    out = out.assign_coords({k: (out[k].dims, v, out[k].attrs) for k, v in text.items() if k in out.coords})
    out = out.assign({k: (out[k].dims, v, out[k].attrs) for k, v in text.items() if k not in out.coords})
    wkt = ds.rio.crs.to_wkt() if ds.rio.crs is not None else None
    for name in out.variables:  # encodings read from another store (codecs, format) do not carry over
        out[name].encoding = {}
    for name in out.data_vars:
        if wkt and {"y", "x"} <= set(out[name].dims):
            out[name].attrs["grid_mapping"] = "spatial_ref"
            out[name].attrs["_CRS"] = {"wkt": wkt}  # where GDAL's Zarr driver looks for the CRS
    out.attrs["Conventions"] = "CF-1.10"
    return out


def write_cube(
    ds: xr.Dataset,
    path: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = False,
    clevel: int = 3,
    zarr_format: Literal[2, 3] = 2,
    verify: Callable[[Path], None] | None = None,
) -> Path:
    """Write a cube (or a prediction) to Zarr, chunk by chunk, atomically.

    Zarr format 2 with consolidated metadata by default, which GDAL (3.4 and later, the version
    current Debian ships included) and QGIS open with CRS and geotransform
    (``gdalinfo 'ZARR:"cube.zarr":/valid'``; 3-D layers take an index, ``/image:0``); format 3 on
    request (GDAL reads its Blosc "bytes" codec from 3.11 on). Blosc-zstd compression, CF
    attributes (``grid_mapping``, x/y ``standard_name``, ``Conventions``). Each dask task computes
    one chunk and writes it as one Zarr region, so memory stays at a few chunks per worker
    whatever the scene size. The store is written to a temporary sibling and renamed into place;
    an existing store is replaced only with ``overwrite=True``, and an error mid-write leaves the
    previous store untouched.
    """
    if zarr_format not in (2, 3):
        raise InvalidInputError(f"zarr_format: expected 2 or 3, found {zarr_format!r}.")
    path = as_location(path)
    inputs = json.loads(ds.attrs.get("provenance", "{}")).get("inputs", {})
    sources = [v for x in inputs.values() for v in (x.values() if isinstance(x, dict) else [x])]
    for src in sources:  # (a series keeps its inputs by date)
        if absolute(src) == absolute(path):
            raise InvalidInputError(f"{path}: the output would overwrite an input.")
    out = _georeferenced(ds)
    with atomic_store(path, overwrite=overwrite) as target:
        if isinstance(target, Path):
            delayed = out.to_zarr(
                target,
                mode="w-",
                zarr_format=zarr_format,
                consolidated=zarr_format == 2,
                compute=False,
                encoding=_encoding(out, clevel, zarr_format),
            )
            compute(delayed, progress=progress)
        else:  # an Icechunk repository on object storage: Zarr 3, chunks written by the workers
            target.write_dataset(out, encoding=_encoding(out, clevel, 3))
        if verify is not None:  # before the store takes its place: a refusal leaves the old one
            verify(target if isinstance(target, Path) else read_store(str(path), snapshot=target.snapshot))
    return path


def consolidated(path: Any) -> bool:
    """Whether a Zarr store has consolidated metadata (format 2 as written here): open it so.
    (An Icechunk store has none: its metadata is read from one snapshot anyway.)"""
    return isinstance(path, str | Path) and (Path(path) / ".zmetadata").exists()


class _CheckedZarr:
    """A Zarr array read chunk by chunk for dask, naming the store, variable and chunk that cannot be
    decoded (a damaged chunk file) instead of letting a bare codec error through."""

    def __init__(
        self, store: Any, name: str, shape: tuple[int, ...], dtype: np.dtype, chunks: tuple, where: str
    ) -> None:
        self.store, self.name, self.shape, self.dtype, self.chunks = store, name, shape, dtype, chunks
        self.where = where
        self.ndim = len(shape)
        self._arr: Any = None

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_arr": None}  # each worker opens the store itself

    def __getitem__(self, key: tuple) -> np.ndarray:
        import zarr

        if self._arr is None:  # a folder, or an Icechunk store (its read-only session travels)
            self._arr = zarr.open_group(self.store, mode="r")[self.name]
        try:
            return np.asarray(self._arr[key])
        except Exception as exc:  # numcodecs/zarr raise several types for a damaged chunk
            index = tuple(
                int(np.searchsorted(np.cumsum(c), k.start or 0, side="right")) if isinstance(k, slice) else k
                for c, k in zip(self.chunks, key, strict=False)
            )
            region = ", ".join(f"{k.start}:{k.stop}" for k in key if isinstance(k, slice))
            raise RasterReadError(
                f"{self.where}: chunk {'.'.join(map(str, index))} of {self.name!r} (region {region}) could "
                f"not be read: the store is damaged there ({type(exc).__name__}: {exc}). Fix: write it again "
                "with the stage that made it (--overwrite)."
            ) from exc


def checked_reads(ds: xr.Dataset, store: Any, where: str | Path) -> xr.Dataset:
    """``ds`` (opened lazily from the Zarr ``store``: a folder, or an Icechunk store; ``where``
    names it) with its chunked variables read through :class:`_CheckedZarr`: the same values,
    and a damaged chunk is named when it is read."""
    import dask.array as da
    import zarr

    group = zarr.open_group(store, mode="r")
    version = getattr(getattr(store, "session", None), "snapshot_id", None)  # an Icechunk snapshot
    out = ds.copy()
    for name, var in ds.data_vars.items():
        if var.chunks is None or name not in group:
            continue
        arr = group[name]
        if np.dtype(arr.dtype) != var.dtype or tuple(arr.shape) != var.shape:
            continue  # a decoded (scaled, masked) variable: left to xarray
        src = _CheckedZarr(store, name, tuple(arr.shape), var.dtype, var.data.chunks, str(where))
        token = da.core.tokenize(str(where), version, name, var.data.chunks)
        data = da.from_array(
            src,
            chunks=var.data.chunks,
            lock=False,
            asarray=False,
            fancy=False,
            name=f"read-{PurePosixPath(str(where)).name}-{name}-{token}",
        )
        out[name] = var.copy(data=data)
    return out


def open_store(
    path: str | Path, kind: Kind, *, require: str, chunks: Mapping[str, int] | None = None
) -> xr.Dataset:
    """Open a Zarr product of ``kind`` lazily, the one way every store is opened: located through
    the registry (temporaries refused, an interrupted set settled), opened with or without
    consolidated metadata, checked for its ``require`` variable, and read chunk by chunk so a
    damaged chunk is named (one dask chunk per Zarr chunk unless ``chunks`` says otherwise)."""
    path = locate(path, kind)
    entry = PRODUCTS[kind]
    store = zarr_store(path)
    try:
        ds = xr.open_zarr(
            store,
            chunks=dict(chunks) if chunks else {},
            consolidated=consolidated(store),
            decode_coords="all",
        )
    except Exception as exc:  # zarr raises several unrelated types for a non-store
        raise RasterReadError(
            f"{path}: expected a {entry.noun} written by {entry.made_by}, found something "
            f"else ({type(exc).__name__}: {exc})."
        ) from exc
    if require not in ds:
        raise RasterReadError(
            f"{path}: expected a {entry.noun} written by {entry.made_by} (with a {require!r} variable), "
            f"found the variables {list(ds.data_vars)}. Fix: pass the {entry.noun}."
        )
    return checked_reads(ds, store, path)


def open_cube(path: str | Path, *, chunks: Mapping[str, int] | None = None) -> xr.Dataset:
    """Reopen a cube lazily (one dask chunk per Zarr chunk unless ``chunks`` says otherwise)."""
    ds = open_store(path, Kind.CUBE, require="image", chunks=chunks)
    if ds.rio.crs is None:
        raise RasterReadError(f"{path}: the cube has no CRS (spatial_ref missing).")
    return ds


_YEAR = re.compile(r"(?<!\d)(19[7-9]\d|20\d\d)(?!\d)")


def file_date(path: str | Path | tuple[Path, ...]) -> str | None:
    """A raster's date, ``YYYY-MM-DD``: from its ``ACQUISITION_DATE``/``DATE``/``TIFFTAG_DATETIME``
    tag, else from a year in its name (then the 1 January of that year); ``None`` if neither."""
    if isinstance(path, tuple):  # the tiles of one mosaic: the first one's
        path = path[0]
    with open_gdal(path) as src:
        tags = src.tags()
    for key in ("ACQUISITION_DATE", "DATE", "TIFFTAG_DATETIME"):
        if tags.get(key):
            return str(np.datetime64(tags[key][:10].replace(":", "-"), "D"))
    m = _YEAR.search(Path(path).name)
    return f"{m.group(1)}-01-01" if m else None


def _series_dates(images: Sequence[Any], dates: Sequence[str] | None) -> list[str]:
    """One distinct ``YYYY-MM-DD`` date per image: given, or read from each file."""
    if dates is None:
        found = [file_date(p) for p in images]
        missing = [str(p) for p, d in zip(images, found, strict=True) if d is None]
        if missing:
            raise InvalidInputError(
                f"{missing}: no date in the file's tags or name. Fix: pass them (--dates 2015-07-01,...)."
            )
        dates = [d for d in found if d is not None]
    out = [str(np.datetime64(d, "D")) for d in dates]
    if len(out) != len(images):
        raise InvalidInputError(f"dates: expected one date per image ({len(images)}), found {len(out)}.")
    if len(set(out)) != len(out):
        raise InvalidInputError(f"dates: expected distinct dates, found {out}. Fix: one image per date.")
    return out


@dataclass(frozen=True)
class _SeriesLabels:
    """Which reference goes with which date of a series."""

    per_date: bool  # one label raster per date, stored (time, y, x)
    vector: bool  # one vector file, rasterised once onto the series grid
    date: str | None  # the date of a single reference
    of_image: tuple[str | Path | None, ...]  # the label raster each date's cube is built with


def _plan_series_labels(
    labels: Sequence[str | Path] | None, dates: Sequence[str], labels_date: str | None
) -> _SeriesLabels:
    n = len(dates)
    if labels is None:
        return _SeriesLabels(False, False, None, (None,) * n)
    per_date = len(labels) == n and n > 1
    vector = any(is_vector(p) for p in labels)
    if vector and per_date:
        raise InvalidInputError(
            "labels: a cube of several dates takes one vector reference file (for --labels-date), "
            f"found {len(labels)}. Fix: pass one file, or label rasters per date."
        )
    if per_date:
        return _SeriesLabels(True, False, None, tuple(labels))
    if len(labels) != 1:
        raise InvalidInputError(f"labels: expected one raster or one per image, found {len(labels)}.")
    if labels_date is None:
        own = None if vector else file_date(labels[0])
        labels_date = own if own in dates else dates[0]
    if labels_date not in dates:
        raise InvalidInputError(f"labels_date: expected one of the image dates {dates}, found {labels_date}.")
    of_image = tuple(None if vector or d != labels_date else labels[0] for d in dates)
    return _SeriesLabels(False, vector, labels_date, of_image)


def _check_same_bands(dates: Sequence[str], cubes: Sequence[xr.Dataset]) -> None:
    bands = [str(b) for b in cubes[0]["band"].values]
    for d, c in zip(dates[1:], cubes[1:], strict=True):
        other = [str(b) for b in c["band"].values]
        if other != bands:
            raise InvalidInputError(
                f"the image of {d} has bands {other}, the image of {dates[0]} {bands}. Fix: export the same "
                "bands for every date (or name them alike with --bands)."
            )


def build_series(
    images: Sequence[str | Path | tuple[Path, ...] | xr.DataArray],
    *,
    dates: Sequence[str] | None = None,
    labels: Sequence[str | Path] | None = None,
    labels_date: str | None = None,
    legend: Legend | None = None,
    radar: Sequence[str | Path | xr.DataArray] | None = None,
    mask: Sequence[str | Path | xr.DataArray] | None = None,
    chunks: int | Mapping[str, int] | None = kio.DEFAULT_CHUNK,
    **kw: Any,
) -> xr.Dataset:
    """A lazy cube of several dates: ``image`` (time, band, y, x) and ``valid`` (time, y, x).

    Every date is built as :func:`build_cube` builds one (its own radar, scaling, nodata) and
    dates on another grid are aligned onto the earliest date's grid lazily (bilinear for the
    imagery, nearest for masks and labels). Dates come from ``dates``, else from each file
    (:func:`file_date`); they are sorted, and must be distinct. ``labels``: one raster, belonging
    to ``labels_date`` (default: the date of the labels file if it is one of the images', else
    the first) and stored as ``labels`` (y, x); or one per date, stored as (time, y, x).
    All dates must have the same bands.
    """
    # a tuple: the tiles of one mosaic; a DataArray: an image loaded already (a STAC day)
    images = [p if isinstance(p, tuple | xr.DataArray) else as_location(p) for p in images]  # type: ignore[misc]
    unsorted = _series_dates(images, dates)
    if radar is not None and len(radar) != len(images):
        raise InvalidInputError(
            f"radar: expected one radar file per image ({len(images)}), found {len(radar)}."
        )
    if mask is not None and len(mask) != len(images):
        raise InvalidInputError(f"mask: expected one mask file per image ({len(images)}), found {len(mask)}.")
    plan = _plan_series_labels(labels, unsorted, labels_date)
    order = np.argsort(unsorted, kind="stable")
    cubes = [
        build_cube(
            images[i],
            plan.of_image[i],
            legend=legend,
            radar=None if radar is None else radar[i],
            mask=None if mask is None else mask[i],
            chunks=chunks,
            **kw,
        )
        for i in order
    ]
    dates = [unsorted[i] for i in order]
    _check_same_bands(dates, cubes)
    out = _stack_dates(dates, cubes, per_date_labels=plan.per_date, labels_date=plan.date)
    if plan.vector:
        assert labels is not None and legend is not None
        layers = reference_layers(
            labels[0],
            cubes[0]["image"],
            legend=legend,
            label_field=kw.get("label_field", "lc"),
            strict=kw.get("strict", False),
            chunks=kio.normalize_chunks(chunks),
        )
        out = out.assign(layers)
    prov = [json.loads(c.attrs["provenance"]) for c in cubes]
    out.attrs = cubes[0].attrs | {
        "dates": json.dumps(dates),
        "labels_date": plan.date or "",
        "provenance": json.dumps(
            prov[0]
            | {"inputs": {d: p["inputs"] for d, p in zip(dates, prov, strict=True)}}
            | ({"labels": str(labels[0])} if plan.vector and labels else {})
        ),
    }
    return out


def _stack_dates(
    dates: Sequence[str], cubes: Sequence[xr.Dataset], *, per_date_labels: bool, labels_date: str | None
) -> xr.Dataset:
    """The dates' layers on the first date's grid, stacked along ``time`` (one chunk per date)."""
    ref = cubes[0]
    aligned = [ref] + [_on_grid(c, ref) for c in cubes[1:]]
    time = xr.DataArray(np.array(dates, dtype="datetime64[ns]"), dims="time", name="time")
    names = ["image", "valid"] + (["labels"] if per_date_labels else [])
    out = xr.Dataset({v: xr.concat([c[v] for c in aligned], dim=time).chunk({"time": 1}) for v in names})
    for v in names:
        out[v].attrs = ref[v].attrs
    if not per_date_labels:
        with_labels = [c for c, d in zip(aligned, dates, strict=True) if d == labels_date and "labels" in c]
        if with_labels:
            out["labels"] = with_labels[0]["labels"]
    return out.rio.write_crs(ref.rio.crs).rio.write_transform(ref.rio.transform())


def _on_grid(cube: xr.Dataset, ref: xr.Dataset) -> xr.Dataset:
    """One date's layers on the reference date's grid (lazily warped when the grids differ)."""
    if not kio.grid_differences(ref["image"], cube["image"]):
        return cube.assign_coords(y=ref["y"], x=ref["x"])
    image = kio.align_to(cube["image"], ref["image"], resampling="bilinear")
    ok = kio.align_to(cube["valid"].astype(np.uint8), ref["valid"], resampling="nearest", nodata=0) > 0
    out = xr.Dataset({"image": image, "valid": (ok & image.notnull().all("band")).rename("valid")})
    if "labels" in cube:
        out["labels"] = kio.align_to(cube["labels"], ref["valid"], resampling="nearest", nodata=0)
        out["labels"].attrs = cube["labels"].attrs
    return out.assign_coords(y=ref["y"], x=ref["x"])


def dates_of(cube: xr.Dataset) -> list[str]:
    """The cube's dates (``YYYY-MM-DD``), empty for a single-date cube."""
    return [str(t)[:10] for t in cube["time"].values] if "time" in cube.dims else []


def cube_view(
    cube: xr.Dataset, *, date: str | None = None, temporal: Literal["date", "stack"] = "date"
) -> xr.Dataset:
    """A single-date view of a cube: ``image`` (band, y, x), ``valid`` (y, x), ``labels`` (y, x).

    ``temporal="date"``: the imagery of ``date`` (default: the labels' date, or the only date);
    ``"stack"``: every date's bands as channels, named ``DATE/BAND`` (``2015-07-01/B4``), valid
    where every date is. Labels are the labels' date's (or, given per date, ``date``'s). A
    single-date cube is returned as it is.
    """
    dates = dates_of(cube)
    if not dates:
        if date is not None or temporal == "stack":
            raise InvalidInputError("the cube has one date: --date and --temporal stack do not apply.")
        return cube
    labels_date = cube.attrs.get("labels_date") or None
    pick = date or labels_date or (dates[0] if len(dates) == 1 else None)
    if temporal == "date" and pick is None:
        raise InvalidInputError(f"the cube has the dates {dates}; choose one (--date).")
    if pick is not None and pick not in dates:
        raise InvalidInputError(f"the cube has no date {pick}; it has {dates}.")
    out = xr.Dataset()
    if temporal == "stack":
        img = cube["image"]
        names = [f"{d}/{b}" for d in dates for b in img["band"].values]
        stacked = img.transpose("time", "band", "y", "x").data.reshape((-1, img.sizes["y"], img.sizes["x"]))
        out["image"] = xr.DataArray(
            stacked,
            dims=("band", "y", "x"),
            coords={"band": names, "y": img["y"], "x": img["x"]},
            attrs=img.attrs,
        )
        out["valid"] = cube["valid"].all("time")
    else:
        out["image"] = cube["image"].sel(time=pick, drop=True)
        out["valid"] = cube["valid"].sel(time=pick, drop=True)
    if "labels" in cube:
        labels = cube["labels"]
        out["labels"] = labels.sel(time=pick or labels_date, drop=True) if "time" in labels.dims else labels
    for name in cube.data_vars:  # vector reference data: the feature raster and table
        if name == "reference_id" or name.startswith("feature_"):
            out[name] = cube[name]
    out = out.rio.write_crs(cube.rio.crs).rio.write_transform(cube.rio.transform())
    out.attrs = cube.attrs | {"date": pick or "", "temporal": temporal}
    return out
