"""Vector reference data: labelled points and polygons read with GeoPandas/pyogrio, rasterised lazily.

Interpreters digitise reference data as points or polygons (GeoJSON, GeoPackage, Shapefile,
GeoParquet). :func:`read_reference` reads such a file, reprojects it to a grid's CRS, turns the
label field into the legend's codes and training ids, and counts what cannot be used (outside the
grid, empty or invalid geometry, codes missing from the legend). :func:`rasterize_reference`
burns the features onto the grid chunk by chunk (``rasterio.features.rasterize`` for polygons,
pixel indexing for points), so a 16000 x 16000 grid never exists in memory as one piece:

- a point labels the pixel that contains it (half-open pixels: left and top edges inclusive);
- a polygon labels the pixels whose centres it covers (GDAL's rule without ``all_touched``);
- a pixel covered by features of *different* classes is left unlabelled (0), never given to
  whichever feature came last; the overlapping pairs are counted and reported.

Besides the labels, every labelled pixel gets the number of the feature that labels it
(``reference_id``, 1-based, 0 = none), so that evaluation can count each feature once.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import rasterio.features
import shapely
from affine import Affine
from pyproj import CRS

from ._locations import VECTOR_SUFFIXES, Location, as_location, gdal_path, is_url, location_error
from ._products import Kind, locate, product_bytes
from .errors import InputFileNotFoundError, InvalidInputError, RasterReadError
from .legend import Legend

__all__ = [
    "VECTOR_SUFFIXES",
    "ReferenceFeatures",
    "is_vector",
    "parse_codes",
    "rasterize_reference",
    "read_points",
    "read_reference",
]

log = logging.getLogger(__name__)

#: File endings read as vector reference data (anything else is opened as a raster).
POINT, POLYGON, MULTIPOINT = 0, 1, 2
_KINDS = {"Point": POINT, "MultiPoint": MULTIPOINT, "Polygon": POLYGON, "MultiPolygon": POLYGON}


def is_vector(path: Any) -> bool:
    """Whether ``path`` names a vector file (by its ending), or is a list of them."""
    if isinstance(path, list | tuple):
        return bool(path) and all(is_vector(p) for p in path)
    if not isinstance(path, str | os.PathLike):
        return False
    return PurePosixPath(os.fspath(path)).suffix.lower() in VECTOR_SUFFIXES


@dataclass
class ReferenceFeatures:
    """Reference features on a grid: a table, the polygon geometries, and what was left out.

    ``table`` has one row per usable feature: ``feature`` (1-based number, the value of
    ``reference_id``), ``source_index`` (row in the file), ``kind`` (0 point, 1 polygon,
    2 multipoint),
    ``code``, ``class_id``, ``x``/``y`` (the point, or a point inside the polygon, in the grid's
    CRS) and ``row``/``col`` (the pixel of that point). ``report`` counts features read, used,
    outside the grid, with empty or invalid geometry, with codes missing from the legend, and
    overlapping pairs of different classes.
    """

    table: pd.DataFrame
    geometries: np.ndarray  # polygons and multipoints in the grid CRS (None for points), as ``table``
    transform: Affine
    shape: tuple[int, int]
    crs: CRS
    report: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def summary(self) -> str:
        r = self.report
        parts = [f"{r['used']:,} of {r['read']:,} features used"]
        for key, what in (
            ("outside", "outside the grid"),
            ("empty_or_invalid", "empty or invalid geometry"),
            ("unknown_code", "codes missing from the legend"),
            ("null_code", "no value in the field"),
        ):
            if r.get(key):
                parts.append(f"{r[key]:,} {what}")
        if r.get("conflicting_pairs"):
            parts.append(
                f"{r['conflicting_pairs']:,} overlapping pairs of different classes (their shared pixels "
                "are left unlabelled)"
            )
        return f"{self.source}: " + "; ".join(parts)


#: Features read and processed at a time: points keep only their coordinates, so a million
#: of them never exist as geometry objects all at once.
BATCH = 250_000


def _batches(path: Location | str, batch: int = BATCH) -> Iterator[Any]:
    """The file as GeoDataFrames of at most ``batch`` features (GeoParquet by row groups); a URL
    is read by OGR's network drivers (``/vsis3/``, ``/vsicurl/``)."""
    import geopandas as gpd

    try:
        if isinstance(path, Path) and path.suffix.lower() in (".parquet", ".geoparquet"):
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            meta = json.loads((pf.schema_arrow.metadata or {}).get(b"geo", b"{}"))
            if not meta:  # plain Parquet: let GeoPandas say what is missing
                yield gpd.read_parquet(path)
                return
            geom = meta.get("primary_column", "geometry")
            crs = meta.get("columns", {}).get(geom, {}).get("crs", "OGC:CRS84")
            for rb in pf.iter_batches(batch_size=batch):
                df = rb.to_pandas()
                wkb = df.pop(geom)
                yield gpd.GeoDataFrame(df, geometry=gpd.GeoSeries.from_wkb(wkb), crs=crs)
            return
        import pyogrio

        name = gdal_path(path)
        n = int(pyogrio.read_info(name)["features"])
        for skip in range(0, max(n, 1), batch):
            yield gpd.read_file(
                name, engine="pyogrio", use_arrow=True, skip_features=skip, max_features=batch
            )
    except (InvalidInputError, InputFileNotFoundError):
        raise
    except Exception as exc:  # pyogrio/arrow raise several types for unreadable files
        if is_url(path):
            raise location_error(str(path), exc, "vector file") from exc
        raise RasterReadError(
            f"{path}: expected a vector file GDAL/OGR can read (GeoJSON, GeoPackage, Shapefile, "
            f"GeoParquet), found something else ({type(exc).__name__}: {exc})."
        ) from exc


def parse_codes(values: pd.Series, legend: Legend, *, source: str, label_field: str) -> np.ndarray:
    """A field of reference classes as legend codes (float, NaN where it is empty).

    Integers, integer strings (``"2001"``, ``" 2001 "``) or class names of the legend (any case)
    are codes; an empty cell is NaN; anything else (``2001.7``, ``"inf"``, an unknown name) is
    refused naming the field and examples. Used for vector labels and for accuracy samples.
    """
    if pd.api.types.is_numeric_dtype(values):
        v = values.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isnan(v) & ~(np.isfinite(v) & (v == np.round(v)))
        if bad.any():
            raise InvalidInputError(
                f"{source}: field {label_field!r} must hold integer class codes, found "
                f"{int(bad.sum())} other value(s), e.g. "
                f"{sorted(set(v[bad].tolist()))[:5]}. Fix: store the legend's codes."
            )
        return v
    text = values.astype("string").str.strip()
    text = text.mask(text == "")  # an empty cell: no class given
    numeric = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    by_name = {name.casefold(): code for name, code in zip(legend.labels, legend.values, strict=True)}
    names = text.str.casefold().map(by_name).to_numpy(dtype=np.float64, na_value=np.nan)
    out = np.where(np.isfinite(numeric), numeric, names)
    bad = text.notna().to_numpy() & ~np.isfinite(out)
    if bad.any():
        found = sorted(set(text[bad].tolist()))
        raise InvalidInputError(
            f"{source}: field {label_field!r} holds {int(bad.sum())} value(s) that are neither class codes "
            f"nor class names of the legend, e.g. {found[:5]}. Expected codes such as {legend.values[:3]} "
            f"or names such as {legend.labels[:3]}. Fix: choose the field with the codes (--label-field) or "
            "name the classes as the legend does."
        )
    if (np.isfinite(out) & (out != np.round(out))).any():
        raise InvalidInputError(f"{source}: field {label_field!r} must hold integer class codes.")
    return out


#: The field ``design-sample`` and ``suggest`` leave for the interpreter: a file among several
#: label files that lacks ``label_field`` is read from it.
MERGED_FIELD = "reference"


def read_reference(
    path: str | Path | Sequence[str | Path],
    label_field: str,
    *,
    crs: Any,
    transform: Affine,
    shape: tuple[int, int],
    legend: Legend,
    strict: bool = False,
) -> ReferenceFeatures:
    """Read labelled points/polygons, reproject them to the grid and check them against the legend.

    Parameters
    ----------
    path
        GeoJSON, GeoPackage, Shapefile, GeoParquet (any CRS; it must declare one), or several such
        files read as one (earlier labels and a labelled ``suggest`` round: a file without
        ``label_field`` is read from its ``reference`` field); features are numbered across them.
    label_field
        The attribute with the class: legend codes (integers or integer strings) or class names.
    crs, transform, shape
        The grid the features are meant for (``shape`` = rows, columns).
    legend
        Codes to training ids, exactly as label rasters are remapped.
    strict
        Make features outside the grid, with empty/invalid geometry or codes missing from the
        legend errors instead of a warning.
    """
    given: Sequence[Any] = path if isinstance(path, list | tuple) else [path]
    paths = [as_location(p) for p in given]
    src = " + ".join(str(p) for p in paths)
    for where in paths:
        if isinstance(where, Path) and not where.exists():
            raise InputFileNotFoundError(f"{where}: reference file not found. Fix: check the path.")
    grid_crs = CRS.from_user_input(crs)
    parts: list[dict[str, Any]] = []
    offset = 0
    for where in paths:
        field_name = label_field
        for gdf in _batches(where):
            if len(paths) > 1 and label_field not in gdf.columns and MERGED_FIELD in gdf.columns:
                field_name = MERGED_FIELD  # the interpreter's field of a sample merged with earlier labels
            parts.append(_read_batch(gdf, where, field_name, legend, grid_crs, transform, shape, offset))
            offset += len(gdf)
            del gdf
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "report"}
    report: dict[str, Any] = {"read": offset}
    for key in ("empty_or_invalid", "null_code", "unknown_code", "outside"):
        report[key] = int(sum(p["report"][key] for p in parts))
    unknown_codes: dict[int, int] = {}
    for p in parts:
        for c, v in p["report"]["unknown_codes"].items():
            unknown_codes[c] = unknown_codes.get(c, 0) + v
    report["unknown_codes"] = unknown_codes
    height, width = shape
    table = pd.DataFrame(
        {
            "feature": np.arange(1, len(cat["kind"]) + 1, dtype=np.int64),
            **{k: cat.pop(k) for k in ("source_index", "kind", "code", "class_id", "x", "y", "row", "col")},
        },
        copy=False,
    )
    bounds = (
        np.array(
            [
                cat["bounds"][:, 0].min(),
                cat["bounds"][:, 1].min(),
                cat["bounds"][:, 2].max(),
                cat["bounds"][:, 3].max(),
            ]
        )
        if len(cat["bounds"])
        else np.full(4, np.nan)
    )
    left, top = transform.c, transform.f
    right, bottom = transform * (width, height)
    box = shapely.box(min(left, right), min(top, bottom), max(left, right), max(top, bottom))
    feats = ReferenceFeatures(table, cat["geometry"], transform, (height, width), grid_crs, report, src)
    report["used"] = len(table)
    report["conflicting_pairs"] = _conflicting_pairs(feats)
    log.info("%s", feats.summary())
    problems = {
        k: report[k] for k in ("outside", "empty_or_invalid", "unknown_code", "null_code") if report[k]
    }
    if problems and strict and len(table):
        raise InvalidInputError(
            f"{feats.summary()}. --strict refuses features that cannot be used. Fix: clip the file to the "
            "image, repair the geometries and use the legend's codes, or run without --strict."
        )
    if problems and len(table):
        warnings.warn(feats.summary(), UserWarning, stacklevel=2)
    if not len(table):
        raise InvalidInputError(
            f"{feats.summary()}: no feature is left to label the image (bounds of the file in the image's "
            f"CRS {tuple(round(float(v), 6) for v in bounds)} vs the image "
            f"{tuple(round(float(v), 6) for v in box.bounds)}). Fix: pass reference data of this area."
        )
    return feats


def _read_batch(
    gdf,
    path: Location | str,
    label_field: str,
    legend: Legend,
    grid_crs: CRS,
    transform: Affine,
    shape: tuple[int, int],
    offset: int,
) -> dict[str, Any]:
    """Check, reproject and place one batch of features; points keep only their coordinates."""
    src = str(path)
    if label_field not in gdf.columns:
        fields = [c for c in gdf.columns if c != gdf.geometry.name]
        raise InvalidInputError(
            f"{path}: expected a field {label_field!r} with the class codes, found the fields {fields}. "
            "Fix: pass --label-field NAME."
        )
    if gdf.crs is None:
        raise InvalidInputError(
            f"{path}: the file declares no CRS, so its coordinates cannot be placed on the image. Fix: "
            "assign one (e.g. ogr2ogr -a_srs EPSG:4326 out.gpkg in.gpkg)."
        )
    if gdf.crs.is_geographic and len(gdf) and not gdf.geometry.is_empty.all():
        x0, y0, x1, y1 = (float(v) for v in gdf.total_bounds)
        if x0 < -360 or x1 > 360 or y0 < -90.5 or y1 > 90.5:
            raise InvalidInputError(
                f"{path}: the file says {gdf.crs.name} (longitude/latitude) but its coordinates span "
                f"x {x0:.6g}..{x1:.6g}, y {y0:.6g}..{y1:.6g}: map coordinates of another CRS (GeoJSON "
                "without a 'crs' member is read as EPSG:4326). Fix: save it with its CRS (GeoPackage), or "
                "assign the right one (ogr2ogr -a_srs EPSG:XXXX)."
            )
    geoms = gdf.geometry.to_numpy()
    empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    type_names = pd.Series(gdf.geom_type).fillna("None").to_numpy()
    unsupported = sorted({t for t, e in zip(type_names, empty, strict=True) if not e and t not in _KINDS})
    if unsupported:
        raise InvalidInputError(
            f"{path}: expected points or polygons (Point, MultiPoint, Polygon, MultiPolygon), found "
            f"{unsupported}. Fix: buffer lines into polygons or convert them to points first."
        )
    invalid = ~empty & ~shapely.is_valid(geoms)
    codes = parse_codes(gdf[label_field], legend, source=src, label_field=label_field)
    null_code = ~np.isfinite(codes)
    lut = legend.lut
    icodes = np.where(np.isfinite(codes), codes, -1).astype(np.int64)
    known = (icodes >= 0) & (icodes < lut.size)
    class_id = np.where(known, lut[np.where(known, icodes, 0)], 0).astype(np.int64)
    unknown = ~null_code & (class_id == 0)
    ok = ~empty & ~invalid & ~null_code & ~unknown
    if not ok.any():
        reproj = np.array([], dtype=object)
    elif CRS.from_user_input(gdf.crs) == grid_crs:  # already on the grid's CRS: no copy
        reproj = geoms[ok]
    else:
        reproj = gdf.geometry[ok].to_crs(grid_crs).to_numpy()
    del geoms
    kinds = np.array([_KINDS[t] for t in type_names[ok]], dtype=np.uint8)
    height, width = shape
    # where each feature sits: the point itself, or a point inside the polygon
    anchor = reproj.copy()
    poly_k, multi_k = kinds == POLYGON, kinds == MULTIPOINT
    anchor[poly_k] = shapely.point_on_surface(reproj[poly_k])
    anchor[multi_k] = shapely.centroid(reproj[multi_k])
    xy = shapely.get_coordinates(anchor) if len(anchor) else np.zeros((0, 2))
    del anchor
    cols_f, rows_f = (~transform) * (xy[:, 0], xy[:, 1]) if len(xy) else (np.zeros(0), np.zeros(0))
    rows, cols = np.floor(rows_f).astype(np.int64), np.floor(cols_f).astype(np.int64)
    left, top = transform.c, transform.f
    right, bottom = transform * (width, height)
    box = shapely.box(min(left, right), min(top, bottom), max(left, right), max(top, bottom))
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    shaped = kinds != POINT
    inside[shaped] = shapely.intersects(reproj[shaped], box)
    idx = np.flatnonzero(ok)[inside]
    keep_geoms = reproj[inside]
    keep_geoms[kinds[inside] == POINT] = None  # points live on as coordinates only
    bounds = shapely.bounds(reproj) if len(reproj) else np.zeros((0, 4))
    return {
        "report": {
            "empty_or_invalid": int((empty | invalid).sum()),
            "null_code": int(null_code.sum()),
            "unknown_code": int(unknown.sum()),
            "unknown_codes": {int(c): int((icodes[unknown] == c).sum()) for c in np.unique(icodes[unknown])},
            "outside": int((~inside).sum()),
        },
        "source_index": (idx + offset).astype(np.int64),
        "kind": kinds[inside],
        "code": icodes[idx],
        "class_id": class_id[idx],
        "x": xy[inside, 0],
        "y": xy[inside, 1],
        "row": rows[inside],
        "col": cols[inside],
        "geometry": keep_geoms,
        "bounds": bounds,
    }


def _conflicting_pairs(feats: ReferenceFeatures) -> int:
    """Pairs of features of different classes that share ground (points in one pixel count too)."""
    t = feats.table
    if len(t) < 2:
        return 0
    n = 0
    pts = t["kind"].to_numpy() != POLYGON
    if pts.sum() > 1:  # points: several classes in one pixel
        pixel = t["row"].to_numpy()[pts] * feats.shape[1] + t["col"].to_numpy()[pts]
        pairs = np.unique(pixel * 256 + t["class_id"].to_numpy()[pts])  # class ids are < 256
        n += len(pairs) - len(np.unique(pairs // 256))  # classes beyond the first in each pixel
    if (~pts).any():
        polys = feats.geometries[~pts]
        tree = shapely.STRtree(polys)
        cls = t["class_id"].to_numpy()
        pcls = cls[~pts]
        a, b = tree.query(polys, predicate="intersects")
        sel = (a < b) & (pcls[a] != pcls[b])
        if sel.any():
            inter = shapely.intersection(polys[a[sel]], polys[b[sel]])
            n += int((shapely.area(inter) > 0).sum())
        if pts.any():  # points (from their coordinates, a batch at a time) inside polygons
            xy = t.loc[pts, ["x", "y"]].to_numpy()
            pcls_pts = cls[pts]
            kind = t["kind"].to_numpy()[pts]
            for a0 in range(0, len(xy), BATCH):
                sl = slice(a0, a0 + BATCH)
                geoms = shapely.points(xy[sl])
                multi = np.flatnonzero(kind[sl] == MULTIPOINT)
                geoms[multi] = feats.geometries[np.flatnonzero(pts)[sl][multi]]
                gi, pi = tree.query(geoms, predicate="intersects")
                n += int((pcls_pts[sl][gi] != pcls[pi]).sum())
    return n


def _burn_chunk(
    rows: slice,
    cols: slice,
    transform: Affine,
    polys: Sequence[Any],
    poly_class: np.ndarray,
    poly_id: np.ndarray,
    pt_rc: np.ndarray,
    pt_class: np.ndarray,
    pt_id: np.ndarray,
) -> np.ndarray:
    """``(2, h, w)`` int32: class id and feature number of one chunk, conflicts left at 0."""
    h, w = rows.stop - rows.start, cols.stop - cols.start
    out = np.zeros((2, h, w), dtype=np.int32)
    if not len(polys) and not len(pt_class):
        return out
    win = transform * Affine.translation(cols.start, rows.start)
    count = np.zeros((h, w), dtype=np.int64)
    s1 = np.zeros((h, w), dtype=np.int64)
    s2 = np.zeros((h, w), dtype=np.int64)
    if len(polys):
        kw = {"out_shape": (h, w), "transform": win, "fill": 0, "all_touched": False}
        out[0] = rasterio.features.rasterize(
            zip(polys, poly_class.tolist(), strict=True), dtype="int32", **kw
        )
        out[1] = rasterio.features.rasterize(zip(polys, poly_id.tolist(), strict=True), dtype="int32", **kw)
        if len(polys) > 1:  # several classes on one pixel: count, sum and sum of squares agree only if alike
            add = rasterio.enums.MergeAlg.add
            count += rasterio.features.rasterize(((g, 1) for g in polys), dtype="int32", merge_alg=add, **kw)
            s1 += rasterio.features.rasterize(
                zip(polys, poly_class.tolist(), strict=True), dtype="int32", merge_alg=add, **kw
            )
            s2 += rasterio.features.rasterize(
                zip(polys, (poly_class**2).tolist(), strict=True), dtype="int32", merge_alg=add, **kw
            )
        else:
            count += out[0] > 0
            s1 += out[0]
            s2 += out[0].astype(np.int64) ** 2
    if len(pt_class):
        r, c = pt_rc[:, 0] - rows.start, pt_rc[:, 1] - cols.start
        out[0, r, c] = pt_class
        out[1, r, c] = pt_id
        np.add.at(count, (r, c), 1)
        np.add.at(s1, (r, c), pt_class)
        np.add.at(s2, (r, c), pt_class.astype(np.int64) ** 2)
    conflict = count * s2 != s1 * s1  # Cauchy-Schwarz: equality iff every class on the pixel is one
    out[:, conflict] = 0
    return out


def rasterize_reference(
    feats: ReferenceFeatures, chunks: tuple[tuple[int, ...], tuple[int, ...]]
) -> tuple[da.Array, da.Array]:
    """Lazy ``(labels uint8, reference_id int32)`` on the features' grid, one task per chunk.

    ``chunks`` are the grid's dask chunks ``((rows...), (cols...))``. Each task receives only
    the features that touch its chunk (found with an STR-tree), so the graph stays small and a
    worker holds one chunk at a time.
    """
    t = feats.table
    kind = t["kind"].to_numpy()
    pts = np.flatnonzero(kind == POINT)
    multi_pts = np.flatnonzero(kind == MULTIPOINT)
    poly_idx = np.flatnonzero(kind == POLYGON)
    # multipoints: each of their points labels its pixel
    mp_rows, mp_cols, mp_owner = [np.zeros(0, np.int64)] * 3
    if len(multi_pts):
        parts, owner = shapely.get_parts(feats.geometries[multi_pts], return_index=True)
        xy = shapely.get_coordinates(parts)
        c, r = (~feats.transform) * (xy[:, 0], xy[:, 1])
        mp_rows, mp_cols, mp_owner = (
            np.floor(r).astype(np.int64),
            np.floor(c).astype(np.int64),
            multi_pts[owner],
        )
    prow = np.concatenate([t["row"].to_numpy()[pts], mp_rows])
    pcol = np.concatenate([t["col"].to_numpy()[pts], mp_cols])
    powner = np.concatenate([pts, mp_owner])
    h, w = feats.shape
    okp = (prow >= 0) & (prow < h) & (pcol >= 0) & (pcol < w)
    prow, pcol, powner = prow[okp], pcol[okp], powner[okp]
    cls = t["class_id"].to_numpy().astype(np.int32)
    fid = t["feature"].to_numpy().astype(np.int32)
    yedges = np.concatenate([[0], np.cumsum(chunks[0])])
    xedges = np.concatenate([[0], np.cumsum(chunks[1])])
    ci = np.searchsorted(yedges, prow, side="right") - 1
    cj = np.searchsorted(xedges, pcol, side="right") - 1
    pt_order = np.lexsort((cj, ci))
    pt_key = ci[pt_order] * len(chunks[1]) + cj[pt_order]
    polys = feats.geometries[poly_idx]
    tree = shapely.STRtree(polys) if len(polys) else None
    boxes = []
    for i in range(len(chunks[0])):
        for j in range(len(chunks[1])):
            x0, y0 = feats.transform * (xedges[j], yedges[i])
            x1, y1 = feats.transform * (xedges[j + 1], yedges[i + 1])
            boxes.append(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    hits = tree.query(np.array(boxes), predicate="intersects") if tree is not None else np.zeros((2, 0), int)
    order = np.argsort(hits[0], kind="stable")
    box_of, poly_of = hits[0][order], hits[1][order]
    rows_out = []
    for i, ch in enumerate(chunks[0]):
        row = []
        for j, cw in enumerate(chunks[1]):
            k = i * len(chunks[1]) + j
            a, b = np.searchsorted(box_of, [k, k + 1])
            pi = np.sort(poly_of[a:b])  # file order: later features drawn last, as in one piece
            pa, pb = np.searchsorted(pt_key, [k, k + 1])
            sel = pt_order[pa:pb]
            task = dask.delayed(_burn_chunk, pure=True)(
                slice(int(yedges[i]), int(yedges[i + 1])),
                slice(int(xedges[j]), int(xedges[j + 1])),
                feats.transform,
                polys[pi],
                cls[poly_idx[pi]],
                fid[poly_idx[pi]],
                np.stack([prow[sel], pcol[sel]], axis=1),
                cls[powner[sel]],
                fid[powner[sel]],
            )
            row.append(da.from_delayed(task, shape=(2, ch, cw), dtype=np.int32))
        rows_out.append(row)
    both = da.block([[blk for blk in r] for r in rows_out])
    return both[0].astype(np.uint8), both[1]


def read_points(path: str | os.PathLike, kind: Kind = Kind.SAMPLE_DESIGN) -> tuple[pd.DataFrame, Any]:
    """A point file's table and CRS (``None`` for CSV: its x/y are in the map's CRS), read
    through the product registry as ``kind`` (a sample design, suggested points ...)."""
    import io

    where = as_location(locate(path, kind))
    data = io.BytesIO(product_bytes(where, kind))
    if where.suffix.lower() == ".csv":
        return pd.read_csv(data, keep_default_na=True), None
    import geopandas as gpd

    try:
        layer = gpd.read_file(data)
    except Exception as exc:  # pyogrio raises its own types for unreadable files
        raise InvalidInputError(
            f"{path}: expected a point layer GDAL can read, found something else ({exc})."
        ) from exc
    return layer, layer.crs
