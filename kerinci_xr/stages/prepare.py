"""``prepare``: imagery, labels and radar into the analysis-ready Zarr cube."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .._options import option
from .._products import Kind
from ..cube import build_cube, build_series, check_content, write_cube
from ..errors import InvalidInputError
from ..io import DEFAULT_CHUNK, expand_images, open_raster
from ..legend import read_legend
from ..preprocess import check_label_codes, label_code_counts
from ..stac import load_stac
from ..vector import is_vector
from ._base import Context, DaskOptions, Stage

__all__ = ["STAGE", "PrepareOptions"]


@dataclass(kw_only=True)
class PrepareOptions(DaskOptions):
    image: tuple[str, ...] | None = option(
        None,
        "optical GeoTIFF (e.g. Landsat_Kerinci_2023_v1.tif); repeat for several dates; a glob "
        "('Landsat_Kerinci_2023_v1-*.tif') or Earth Engine tiles of one export form one mosaic",
        io="in",
        kind=Kind.IMAGE,
    )
    stac: str | None = option(
        None,
        "instead of --image: STAC items (an ItemCollection, Catalog, Collection or Item JSON, a file "
        "or URL), loaded with odc-stac; one date per day",
        io="in",
        kind=Kind.STAC,
    )
    assets: tuple[str, ...] | None = option(
        None, "STAC: the bands to load (asset keys, band or common names; default the reflective ones)"
    )
    bbox: tuple[float, ...] | None = option(
        None,
        "STAC: west,south,east,north in degrees: the items that meet it, cropped to it "
        "(--bbox=-94.2,44.0,-94.0,44.1 when west is negative)",
        length=4,
    )
    datetime: str | None = option(None, "STAC: the items of a day or range, 2020-01-01/2020-06-30")
    radar_stac: str | None = option(
        None,
        "instead of --radar: STAC items of a radar collection (assets named by --radar-bands); each "
        "date takes the radar day nearest to it",
        io="in",
        kind=Kind.STAC,
    )
    dates: tuple[str, ...] | None = option(
        None, "the images' dates, YYYY-MM-DD (default: from their tags or names)"
    )
    labels: tuple[str, ...] | None = option(
        None,
        "label GeoTIFF with the legend's original codes (one, or one per date), or labelled points/"
        "polygons (GeoJSON, GeoPackage, Shapefile, GeoParquet; several files are merged, e.g. earlier "
        "labels and a labelled suggest round)",
        io="in",
        kind=Kind.LABELS,
    )
    label_field: str = option("lc", "vector labels: the field with the codes (or class names)")
    labels_date: str | None = option(
        None, "the date one label raster belongs to (default: its own, or the first)"
    )
    legend: str | None = option(None, "lc.json with values, label, palette", io="in", kind=Kind.LEGEND)
    radar: tuple[str, ...] | None = option(
        None, "radar GeoTIFF on any grid (e.g. PALSAR HH,HV); one per date", io="in", kind=Kind.RADAR
    )
    bands: tuple[str, ...] | None = option(
        None, "optical band names, comma-separated (default: from the file)"
    )
    select: tuple[str, ...] | None = option(None, "keep only these optical bands, e.g. B2,B3,B4,B5,B6,B7")
    band_roles: tuple[str, ...] | None = option(
        None, "roles of bands the sensor table does not know, e.g. nir=B4,swir1=B5,swir2=B7"
    )
    radar_bands: tuple[str, ...] = option(("HH", "HV"), "radar band names")
    mask: tuple[str, ...] | None = option(
        None,
        "cloud/quality mask raster (Fmask, Landsat QA_PIXEL), one per date, on any grid: pixels it "
        "does not call clear are invalid",
        io="in",
        kind=Kind.MASK,
    )
    mask_band: str | None = option(
        None, "instead of --mask: the image's band that holds the mask (not a feature)"
    )
    mask_kind: Literal["fmask", "qa_pixel", "values"] = option(
        "fmask",
        "how to read the mask: fmask (clear: 0 land, 1 water), qa_pixel (Landsat C2: fill, dilated "
        "cloud, cirrus, cloud, shadow and snow bits all 0), values (clear: --mask-values)",
    )
    mask_values: tuple[int, ...] = option((), "--mask-kind values: the codes of clear pixels")
    scale: float | None = option(
        None,
        "reflectance scale (default: 1e-4 for GeoTIFF exports of reflectance x1e4; for STAC the "
        "items' own; 0.00392 for 8-bit DN)",
        gt=0,
    )
    offset: float | None = option(
        None, "reflectance offset added after scaling (default: 0; for STAC the items' own)"
    )
    nodata: float | None = option(None, "optical nodata value (default: from the file)")
    radar_scale: float = option(1e-3, "radar scale (1e-3 for dB x1e3, 1 for dB)", gt=0)
    chunk: int = option(DEFAULT_CHUNK, "chunk edge in pixels", ge=16)
    sensor: Literal["auto", "landsat8", "landsat7", "sentinel2"] = option(
        "auto", "which bands play which role"
    )
    align_labels: bool = option(False, "warp off-grid labels (nearest) instead of failing")
    strict: bool = option(
        False,
        "fail on label codes missing from the legend (vector labels: also features outside the image "
        "or with broken geometry)",
    )
    zarr_format: Literal[2, 3] = option(2, "Zarr 2 (GDAL 3.4+ and QGIS open it) or 3")
    out: str = option(help="output cube (.zarr)", io="out", kind=Kind.CUBE, run_name="cube.zarr")
    overwrite: bool = option(False, "replace an existing cube", pipeline=False)


def run(o: PrepareOptions, ctx: Context) -> dict[str, Any]:
    """Build the cube, check label codes against the legend, and write it.

    Everything that can be wrong with the inputs is checked before the output is touched;
    with ``strict`` label codes missing from the legend are an error, otherwise a warning.
    """
    legend = read_legend(o.legend) if o.legend is not None else None
    if o.labels is not None and legend is None:
        raise InvalidInputError("--labels given without --legend. Fix: pass the lc.json legend.")
    build = functools.partial(  # what every date is built with
        build_cube,
        legend=legend,
        bands=o.bands,
        radar_bands=o.radar_bands,
        scale=o.scale,
        offset=o.offset,
        nodata=o.nodata,
        radar_scale=o.radar_scale,
        align_labels=o.align_labels,
        chunks=o.chunk,
        sensor=o.sensor,
        select=o.select,
        roles=o.band_roles,
        label_field=o.label_field,
        strict=o.strict,
        mask_band=o.mask_band,
        mask_kind=o.mask_kind,
        mask_values=o.mask_values,
    )
    images, dates, radar, build = _images(o, build)
    if len(images) == 1 and dates is None:  # one date: the cube keeps its (band, y, x) layout
        if radar is not None and len(radar) != 1:
            raise InvalidInputError(f"radar: one image takes one radar file, found {len(radar)}.")
        if o.labels is not None and len(o.labels) != 1 and not is_vector(o.labels):
            raise InvalidInputError(
                f"labels: one image takes one label raster (or any number of point/polygon files, read as "
                f"one), found {len(o.labels)} files."
            )
        if o.mask is not None and len(o.mask) != 1:
            raise InvalidInputError(f"mask: one image takes one mask file, found {len(o.mask)}.")
        mask = o.mask[0] if o.mask else None
        labels = (o.labels[0] if len(o.labels) == 1 else tuple(o.labels)) if o.labels else None
        ds = build(images[0], labels, radar=radar[0] if radar else None, mask=mask)
    else:
        ds = build_series(
            images,
            dates=dates,
            labels=o.labels,
            labels_date=o.labels_date,
            radar=radar,
            mask=o.mask,
            **build.keywords,
        )
    unknown: dict[int, int] = {}
    if "reference_id" in ds:
        ctx.echo(_reference_summary(ds))
    for path in [p for p in o.labels or () if not is_vector(p) and legend is not None]:
        raw = open_raster(path, chunks=o.chunk)
        unknown |= check_label_codes(
            label_code_counts(raw, source=path),
            legend,  # type: ignore[arg-type]  # (given whenever labels are: refused above otherwise)
            nodata=raw.attrs.get("nodata"),
            strict=o.strict,
            source=path,
        )
    if o.labels is not None and legend is not None:
        prov = json.loads(ds.attrs["provenance"])
        prov["legend_file"] = str(o.legend)
        prov["unknown_label_codes"] = {str(k): v for k, v in unknown.items()}
        ds.attrs["provenance"] = json.dumps(prov)
    return {
        "cube": write_cube(
            ds,
            o.out,
            overwrite=o.overwrite,
            progress=ctx.progress,
            zarr_format=o.zarr_format,
            verify=check_content,
        )
    }


def _images(o: PrepareOptions, build: functools.partial) -> tuple[list, Any, Any, functools.partial]:
    """The optical images (paths, mosaics, or STAC days loaded lazily), their dates, the radar
    of each, and the builder with what STAC decided (scaling applied already, band roles)."""
    if (o.image is None) == (o.stac is None):
        raise InvalidInputError("prepare needs --image or --stac (one of them). Fix: pass the imagery.")
    stac_only = {"assets": o.assets, "bbox": o.bbox, "datetime": o.datetime, "radar_stac": o.radar_stac}
    if o.image is not None:
        given = [k for k, v in stac_only.items() if v is not None]
        if given:
            raise InvalidInputError(
                f"--{given[0].replace('_', '-')} goes with --stac. Fix: pass --stac ITEMS."
            )
        # a glob, or the Earth Engine tiles of one export, is one mosaic
        return expand_images(o.image), o.dates, o.radar, build
    if o.mask is not None or o.mask_band is not None:
        raise InvalidInputError(
            "--mask and --mask-band are for GeoTIFF images; with --stac the QA asset would be scaled like "
            "reflectance. Fix: export the items to GeoTIFF, or prepare without a mask."
        )
    if o.bands or o.select or o.nodata is not None:
        raise InvalidInputError(
            "--bands, --select and --nodata are for GeoTIFF images; STAC items name their bands and nodata. "
            "Fix: choose bands with --assets."
        )
    if o.radar is not None and o.radar_stac is not None:
        raise InvalidInputError("--radar and --radar-stac: pass one of them.")
    days = load_stac(
        o.stac,  # type: ignore[arg-type]  # (given: checked above)
        assets=o.assets,
        bbox=o.bbox,
        datetime_range=o.datetime,
        chunks=o.chunk,
        scale=o.scale,
        offset=o.offset,
    )
    if o.dates is not None and len(o.dates) != len(days):
        raise InvalidInputError(
            f"--dates: {len(o.dates)} given for {len(days)} STAC day(s) ({', '.join(d.date for d in days)}). "
            "Fix: leave --dates out (the items' dates are used)."
        )
    roles = o.band_roles or tuple(f"{r}={b}" for r, b in days[0].roles.items())
    build = functools.partial(build, scale=1.0, offset=0.0, roles=roles)  # scaled by load_stac
    dates = list(o.dates) if o.dates is not None else [d.date for d in days]
    radar: Sequence[Any] | None = o.radar
    if o.radar_stac is not None:  # (its values as stored: --radar-scale applies, as to a GeoTIFF)
        found = load_stac(
            o.radar_stac, assets=o.radar_bands, bbox=o.bbox, chunks=o.chunk, scale=1.0, offset=0.0
        )
        when = np.array([np.datetime64(r.date) for r in found])
        nearest = [int(np.argmin(abs(when - np.datetime64(d)))) for d in dates]  # each date's radar day
        radar = [found[i].image.assign_attrs(source=o.radar_stac) for i in nearest]
    images = [d.image.assign_attrs(source=o.stac) for d in days]
    return images, (None if len(days) == 1 and o.dates is None else dates), radar, build


def _reference_summary(ds) -> str:
    r = json.loads(ds["reference_id"].attrs["reference_report"])
    kinds = ds["feature_kind"].values
    lines = [
        f"reference features: {r['used']:,} of {r['read']:,} used ({int((kinds != 1).sum()):,} points or "
        f"multipoints, {int((kinds == 1).sum()):,} polygons)"
    ]
    for key, what in (
        ("outside", "outside the image"),
        ("empty_or_invalid", "empty or invalid geometry"),
        ("unknown_code", "code missing from the legend"),
        ("null_code", "no code"),
        ("conflicting_pairs", "overlapping pairs of different classes (shared pixels left unlabelled)"),
    ):
        if r.get(key):
            lines.append(f"  left out: {r[key]:,} {what}")
    return "\n".join(lines)


STAGE = Stage(
    "prepare",
    "build the analysis-ready Zarr cube from imagery, labels and radar",
    PrepareOptions,
    run,
    "kerinci-xr prepare --image L15.tif --image L23.tif --labels LC15.tif --legend lc.json --out cube.zarr",
    args=("image",),
)
