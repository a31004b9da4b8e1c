"""STAC inputs: the items of a catalog loaded with odc-stac as the lazy image a GeoTIFF gives.

A STAC ItemCollection, Catalog, Collection or Item (a JSON file or URL) is read with pystac, its
items filtered by a lon/lat box and a date range, and their assets loaded with
:func:`odc.stac.load` as one chunked ``(band, y, x)`` DataArray per day: float32 reflectance,
scaled with each asset's ``raster:bands`` scale and offset (or, for a collection that publishes
none, the scale and offset the toolkit knows for it, or the user's), NaN where the asset's
nodata is. Band roles (red, nir, swir1 ...) come from the assets' ``eo:bands`` common names.
Nothing is read but the JSON: the pixels are read chunk by chunk when the cube is written.

Example
-------
>>> days = load_stac("items.json", bbox=(-94.2, 44.0, -94.0, 44.1), chunks=1024)  # doctest: +SKIP
>>> days[0].date, days[0].image.dims  # doctest: +SKIP
('2020-01-14', ('band', 'y', 'x'))
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import numpy as np
import xarray as xr

from ._locations import gdal_path, is_url, read_bytes
from .errors import InvalidInputError
from .io import normalize_chunks

__all__ = ["COLLECTION_SCALING", "Scaling", "StacDay", "load_stac", "read_items"]


@dataclass(frozen=True)
class Scaling:
    """How an asset's integers become physical values: ``value = DN * scale + offset``; ``nodata``
    marks missing pixels."""

    scale: float
    offset: float
    nodata: float | None


#: Collections that publish no ``raster:bands`` but whose scaling is documented. Landsat
#: Collection 2 Level-2 surface reflectance: 2.75e-5 x DN - 0.2, 0 = fill (USGS Landsat 8-9
#: Collection 2 Level 2 Science Product Guide, section 6), for the USGS catalog and Planetary
#: Computer's copy of it; their reflectance assets only (thermal bands scale otherwise).
COLLECTION_SCALING: dict[str, Scaling] = {
    "landsat-c2l2-sr": Scaling(2.75e-5, -0.2, 0),
    "landsat-c2-l2": Scaling(2.75e-5, -0.2, 0),
}

#: eo:bands common names of the reflective bands, and the role each plays in the toolkit.
_ROLES = {
    "coastal": "coastal",
    "blue": "blue",
    "green": "green",
    "red": "red",
    "nir": "nir",
    "nir08": "nir",
    "swir16": "swir1",
    "swir22": "swir2",
    "cirrus": "cirrus",
}


@dataclass(frozen=True)
class StacDay:
    """The items of one day as one image: ``image`` is ``(band, y, x)`` float32 reflectance (NaN
    where invalid), ``roles`` maps roles to its band names."""

    date: str
    image: xr.DataArray
    roles: dict[str, str]


def _resolve(href: str, base: str) -> str:
    """An href of a STAC document read from ``base`` (a path or a URL) as a location."""
    if is_url(href) or os.path.isabs(href):
        return href
    if is_url(base):
        return urljoin(base, href)
    return os.path.normpath(os.path.join(os.path.dirname(base), href))


def _items_of(doc: dict, base: str, seen: set[str]) -> list[dict]:
    """The item dicts of a STAC document (an Item, ItemCollection, Catalog or Collection; links
    of the last two followed), each with its asset hrefs resolved against where it was read."""
    kind = doc.get("type")
    if kind == "Feature":
        doc = dict(doc, assets={k: dict(a, href=_resolve(a["href"], base)) for k, a in doc["assets"].items()})
        return [doc]
    if kind == "FeatureCollection":
        return [it for f in doc.get("features", []) for it in _items_of(f, base, seen)]
    if kind in ("Catalog", "Collection"):
        out = []
        for link in doc.get("links", []):
            if link.get("rel") not in ("item", "child"):
                continue
            href = _resolve(link["href"], base)
            if href in seen:
                continue
            seen.add(href)
            out += _items_of(_read_json(href), href, seen)
        return out
    raise InvalidInputError(
        f"{base}: expected a STAC Item, ItemCollection, Catalog or Collection, found a JSON document of "
        f"type {kind!r}. Fix: pass the STAC JSON (an ItemCollection saved from a search, or a catalog)."
    )


def _read_json(location: str) -> dict:
    text = read_bytes(location, "STAC document")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InvalidInputError(
            f"{location}: expected a STAC document (JSON), found something else ({exc})."
        ) from exc
    if not isinstance(doc, dict):
        raise InvalidInputError(
            f"{location}: expected a STAC document (a JSON object), found {type(doc).__name__}."
        )
    return doc


def _date_range(text: str | None) -> tuple[datetime | None, datetime | None]:
    """``"2020-01-01/2020-06-30"``, ``"2020-01-14"`` or open ``"../2020-06-30"`` as UTC bounds."""
    if not text:
        return None, None

    def parse(part: str, end: bool) -> datetime | None:
        if part in ("", ".."):
            return None
        try:
            d = datetime.fromisoformat(part.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidInputError(
                f"datetime: expected a date or a range (2020-01-01/2020-06-30), found {text!r}."
            ) from exc
        if len(part) == 10 and end:  # a whole day
            d = d.replace(hour=23, minute=59, second=59, microsecond=999999)
        return d if d.tzinfo else d.replace(tzinfo=UTC)

    lo, _, hi = text.partition("/")
    return parse(lo, False), parse(hi if "/" in text else lo, True)


def read_items(
    location: str | os.PathLike,
    *,
    bbox: Sequence[float] | None = None,
    datetime_range: str | None = None,
) -> list[Any]:
    """The STAC items of a document (file or URL) whose footprint meets ``bbox`` (lon/lat
    ``west, south, east, north``) and whose date lies in ``datetime_range``, as pystac Items."""
    import pystac

    source = os.fspath(location)
    items = _items_of(_read_json(source), source, {source})
    lo, hi = _date_range(datetime_range)
    out = []
    for d in items:
        # hrefs are resolved already (against where each document was read): without its links an
        # item does not re-resolve them against a self link that names another host
        item = pystac.Item.from_dict(dict(d, links=[]), preserve_dict=False)
        if bbox is not None and item.bbox is not None:
            w, s, e, n = item.bbox[:2] + item.bbox[-2:] if len(item.bbox) == 6 else item.bbox
            if w > bbox[2] or e < bbox[0] or s > bbox[3] or n < bbox[1]:
                continue
        when = item.datetime or item.common_metadata.start_datetime
        if when is not None and ((lo is not None and when < lo) or (hi is not None and when > hi)):
            continue
        out.append(item)
    if not out:
        raise InvalidInputError(
            f"{source}: none of its {len(items)} STAC item(s) lies in the box "
            f"{list(bbox) if bbox else 'any'} and the dates {datetime_range or 'any'}. "
            "Fix: widen --bbox or --datetime."
        )
    return out


def _band_assets(item: Any, wanted: Sequence[str] | None) -> list[str]:
    """The asset keys to load: those asked for (by asset key, eo:bands name or common name), or
    every data asset with a reflective common name."""
    assets = item.assets

    def names(key: str) -> set[str]:
        bands = assets[key].extra_fields.get("eo:bands") or []
        return {key.lower()} | {str(b.get(f, "")).lower() for b in bands for f in ("name", "common_name")} - {
            ""
        }

    if wanted:
        keys = []
        for w in wanted:
            hits = [k for k in assets if w.lower() in names(k)]
            if not hits:
                raise InvalidInputError(
                    f"STAC item {item.id}: no asset or band named {w!r}; it has the assets {sorted(assets)}. "
                    "Fix: pass --assets with some of those (asset keys, band names or common names)."
                )
            keys.append(hits[0])
        return keys
    keys = [k for k in assets if _common(assets[k]) in _ROLES]
    if not keys:
        raise InvalidInputError(
            f"STAC item {item.id}: no asset with a reflective eo:bands common name ({sorted(_ROLES)}); "
            f"it has the assets {sorted(assets)}. Fix: pass --assets."
        )
    return keys


def _common(asset: Any) -> str | None:
    bands = asset.extra_fields.get("eo:bands") or []
    return str(bands[0].get("common_name")) if len(bands) == 1 and bands[0].get("common_name") else None


def _scaling(item: Any, key: str, scale: float | None, offset: float | None) -> Scaling:
    """An asset's scaling: ``raster:bands``, else the collection's known one, else the user's;
    the user's scale and offset, when given, win over both."""
    rb = (item.assets[key].extra_fields.get("raster:bands") or [{}])[0]
    known = COLLECTION_SCALING.get(item.collection_id or "") if _common(item.assets[key]) in _ROLES else None
    nodata = rb.get("nodata", known.nodata if known else None)
    if scale is not None:
        return Scaling(scale, offset or 0.0, nodata)
    if "scale" in rb or "offset" in rb:
        return Scaling(float(rb.get("scale", 1.0)), float(rb.get("offset", 0.0)), nodata)
    if known is not None:
        return Scaling(known.scale, known.offset, nodata)
    raise InvalidInputError(
        f"STAC item {item.id} (collection {item.collection_id!r}): its asset {key!r} declares no scale or "
        "offset (raster:bands) and the toolkit does not know this collection's. Fix: pass --scale and "
        "--offset (Landsat Collection 2 Level-2 reflectance: --scale 2.75e-5 --offset -0.2; an Earth "
        "Engine export of reflectance x1e4: --scale 1e-4)."
    )


def load_stac(
    items: str | os.PathLike | Sequence[Any],
    *,
    assets: Sequence[str] | None = None,
    bbox: Sequence[float] | None = None,
    datetime_range: str | None = None,
    chunks: int | Mapping[str, int] | None = 1024,
    scale: float | None = None,
    offset: float | None = None,
    resampling: str = "nearest",
) -> list[StacDay]:
    """STAC items as one lazy image per day (items of one solar day are mosaicked).

    Parameters
    ----------
    items
        A STAC document (file or URL: Item, ItemCollection, Catalog, Collection) or pystac Items.
    assets
        Bands to load, by asset key (``red``), band name (``B4``) or common name; default every
        asset with a reflective ``eo:bands`` common name.
    bbox
        ``west, south, east, north`` in degrees: the items that meet it, cropped to it (on the
        items' own pixel grid).
    datetime_range
        ``"2020-01-01/2020-06-30"`` or one day.
    chunks
        Spatial chunk edge in pixels.
    scale, offset
        Override the scaling (for collections that declare none and the toolkit does not know).

    Returns
    -------
    list of StacDay
        By date. Each image has dims ``("band", "y", "x")``, float32 values ``DN * scale + offset``
        with NaN where the asset's nodata is, the CRS and transform via ``.rio``.
    """
    import odc.stac

    if isinstance(items, str | os.PathLike):
        source: str | None = os.fspath(items)
        found = read_items(items, bbox=bbox, datetime_range=datetime_range)
    else:
        source, found = None, list(items)
    first = found[0]
    keys = _band_assets(first, assets)
    for it in found[1:]:
        missing = [k for k in keys if k not in it.assets]
        if missing:
            raise InvalidInputError(
                f"STAC item {it.id}: no asset {missing[0]!r}, which {first.id} has. Fix: pass --assets "
                "with bands every item has, or items of one collection."
            )
    scaling = {k: _scaling(first, k, scale, offset) for k in keys}
    edge = normalize_chunks(chunks)
    cfg = {"*": {"assets": {k: {"nodata": s.nodata} for k, s in scaling.items() if s.nodata is not None}}}
    try:
        ds = odc.stac.load(
            found,
            bands=keys,
            bbox=(bbox[0], bbox[1], bbox[2], bbox[3]) if bbox is not None else None,
            chunks={"y": edge["y"], "x": edge["x"]},
            groupby="solar_day",
            resampling=resampling,
            stac_cfg=cfg,
            patch_url=gdal_path,
        )
    except ValueError as exc:
        raise InvalidInputError(
            f"{source or 'STAC items'}: odc-stac could not place the items ({exc})."
        ) from exc
    if "latitude" in ds.dims:  # odc-stac names the axes of a geographic CRS so; the cube's are y, x
        ds = ds.rename({"latitude": "y", "longitude": "x"})
    roles = {_ROLES[c]: k for k in keys if (c := _common(first.assets[k])) in _ROLES}
    days = []
    for t in range(ds.sizes["time"]):
        bands = []
        for k in keys:
            raw = ds[k].isel(time=t, drop=True)
            s = scaling[k]
            ok = raw != s.nodata if s.nodata is not None and not np.isnan(s.nodata) else np.isfinite(raw)
            bands.append(
                xr.where(ok, raw.astype("float32") * np.float32(s.scale) + np.float32(s.offset), np.nan)
            )
        image = xr.concat(bands, dim="band").assign_coords(band=list(keys)).astype("float32")
        image = image.chunk({"band": -1}).transpose("band", "y", "x")
        image = image.rio.write_crs(ds.odc.crs.to_wkt()).rio.write_transform(ds.odc.geobox.affine)
        image.attrs = {"nodata": None, "source": source or "STAC items"}
        date = str(np.datetime_as_string(ds["time"].values[t], unit="D"))
        days.append(StacDay(date, image.rename("image"), roles))
    return days
