"""Accuracy (confusion matrix, kappa, per-class figures), pixel and class areas: numpy or dask."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from pyproj import CRS, Transformer

from ._outputs import write_text
from .errors import InvalidInputError
from .legend import Legend
from .preprocess import blockwise_bincount
from .sampling import SPLITS

__all__ = [
    "accuracy_report",
    "area_table",
    "class_areas",
    "class_pixel_counts",
    "confusion_matrix",
    "counts_and_hectares",
    "evaluate_features",
    "evaluate_prediction",
    "feature_table",
    "format_calibration",
    "format_report",
    "pixel_area_m2",
    "write_report",
]


def _zone_area(lat_deg: np.ndarray, a: float, b: float) -> np.ndarray:
    """Area (m^2) between the equator and ``lat`` on the ellipsoid, per radian of longitude."""
    e2 = 1.0 - (b * b) / (a * a)
    s = np.sin(np.deg2rad(lat_deg))
    if e2 < 1e-15:
        return a * a * s
    e = np.sqrt(e2)
    return b * b * (s / (2 * (1 - e2 * s * s)) + np.log((1 + e * s) / (1 - e * s)) / (4 * e))


def _area_block(
    template: np.ndarray, coarse: np.ndarray, rows: np.ndarray, cols: np.ndarray, block_info=None
):
    """Pixel areas of one chunk, interpolated (bilinear) from areas on a coarse grid of nodes."""
    from scipy.interpolate import RegularGridInterpolator

    (r0, r1), (c0, c1) = block_info[None]["array-location"]
    rr, cc = np.meshgrid(np.arange(r0, r1) + 0.5, np.arange(c0, c1) + 0.5, indexing="ij")
    return RegularGridInterpolator((rows, cols), coarse)((rr, cc))


def _ellipsoidal_cell_area(crs: CRS, tr, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Ellipsoidal area of a pixel centred on each (row, col) node of a projected grid.

    The pixel's sides, mapped to longitude/latitude by half-pixel central differences, span a
    parallelogram whose area on the ellipsoid is ``|dlon_x dlat_y - dlon_y dlat_x| M N cos(lat)``
    (M, N: the meridional and prime-vertical radii of curvature). Exact to second order in the
    pixel size, and independent of how a projection reports its scale factors.
    """
    ell = crs.ellipsoid
    a, e2 = ell.semi_major_metre, 1 - (ell.semi_minor_metre / ell.semi_major_metre) ** 2
    to_geo = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    cc, rr = np.meshgrid(cols, rows)

    def lonlat(dc: float, dr: float) -> tuple[np.ndarray, np.ndarray]:
        x, y = tr * (cc + dc, rr + dr)
        lon, lat = to_geo.transform(x, y)
        return np.deg2rad(lon), np.deg2rad(lat)

    (lx1, px1), (lx0, px0) = lonlat(0.5, 0), lonlat(-0.5, 0)
    (ly1, py1), (ly0, py0) = lonlat(0, 0.5), lonlat(0, -0.5)
    lat = np.deg2rad(to_geo.transform(*(tr * (cc, rr)))[1])
    s2 = np.sin(lat) ** 2
    m = a * (1 - e2) / (1 - e2 * s2) ** 1.5
    n = a / np.sqrt(1 - e2 * s2)
    jac = np.abs((lx1 - lx0) * (py1 - py0) - (ly1 - ly0) * (px1 - px0))
    return jac * m * n * np.cos(lat)


def pixel_area_m2(grid: xr.DataArray | xr.Dataset, *, nodes: int = 257) -> xr.DataArray:
    """Area of each pixel in square metres, on the ellipsoid whatever the CRS.

    Geographic grids (e.g. EPSG:4326): the exact area of the ellipsoidal cell between two
    parallels, ``(y,)``. Projected grids: the pixel's area on the ellipsoid
    (:func:`_ellipsoidal_cell_area`), a scalar where the projection preserves area over the grid
    (equal-area CRSs), otherwise a lazy ``(y, x)`` array interpolated per chunk from ``nodes`` x
    ``nodes`` points (the area varies smoothly): a Web Mercator pixel at 60 degrees counts a
    quarter of its nominal area, as it should, and a UTM pixel its true area within 0.1 %.
    """
    crs = grid.rio.crs
    tr = grid.rio.transform()
    if crs is None:
        raise InvalidInputError("pixel_area_m2: the grid has no CRS.")
    if crs.is_geographic:
        ell = CRS.from_user_input(crs.to_wkt()).ellipsoid
        a, b = ell.semi_major_metre, ell.semi_minor_metre
        rows = np.arange(grid.sizes["y"])
        lat_top = tr.f + rows * tr.e
        lat_bottom = lat_top + tr.e
        width = np.deg2rad(abs(tr.a))
        area = np.abs(_zone_area(lat_top, a, b) - _zone_area(lat_bottom, a, b)) * width
        return xr.DataArray(area, dims="y", coords={"y": grid["y"].values}, name="pixel_area_m2")
    factor = crs.linear_units_factor[1] if crs.linear_units else 1.0
    nominal = abs(tr.a * tr.e) * factor**2
    h, w = grid.sizes["y"], grid.sizes["x"]
    rows, cols = np.linspace(0, h, min(h + 1, nodes)), np.linspace(0, w, min(w + 1, nodes))
    coarse = _ellipsoidal_cell_area(CRS.from_user_input(crs.to_wkt()), tr, rows, cols)
    if np.all(np.abs(coarse / nominal - 1) < 1e-7):  # an equal-area projection
        return xr.DataArray(nominal, name="pixel_area_m2")
    data = grid.data if isinstance(getattr(grid, "data", None), da.Array) else da.zeros((h, w), chunks=1024)
    template = data if data.ndim == 2 else data[0]
    area = template.map_blocks(_area_block, coarse, rows, cols, dtype=np.float64, meta=np.array(()))
    return xr.DataArray(area, dims=("y", "x"), name="pixel_area_m2")


def _wbincount_block(block: np.ndarray, weights: np.ndarray, nbins: int) -> np.ndarray:
    b = block.ravel().astype(np.int64)
    w = np.broadcast_to(weights, block.shape).ravel()
    keep = b < nbins
    return np.bincount(b[keep], weights=w[keep], minlength=nbins)[None, None, :]


def class_pixel_counts(labels: xr.DataArray, n_classes: int) -> np.ndarray:
    """Pixel count per training id ``0..n_classes`` (index 0 = nodata), one streaming pass."""
    data = labels.data
    if not isinstance(data, da.Array):
        b = np.asarray(data).ravel()
        return np.bincount(b[b <= n_classes], minlength=n_classes + 1)
    return blockwise_bincount(data, n_classes + 1).compute()


def counts_and_hectares(values: xr.DataArray, nbins: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and hectares (on the ellipsoid) of each value ``0..nbins-1`` of an integer raster.

    One streaming pass; values outside the range are not counted.
    """
    area = pixel_area_m2(values)
    counts = class_pixel_counts(values, nbins - 1)
    if area.ndim == 0:
        return counts, counts * float(area) / 1e4
    data = values.data if isinstance(values.data, da.Array) else da.from_array(values.data)
    if area.ndim == 1:  # by row: one column of weights per row of chunks
        weights = da.from_array(area.values[:, None], chunks=(data.chunks[0], (1,)))
    else:
        weights = area.data.rechunk(data.chunks)
    sums = da.map_blocks(
        _wbincount_block,
        data,
        weights,
        nbins,
        new_axis=2,
        chunks=((1,) * data.numblocks[0], (1,) * data.numblocks[1], (nbins,)),
        dtype=np.float64,
    ).sum(axis=(0, 1))
    return counts, sums.compute() / 1e4


def class_areas(labels: xr.DataArray, legend: Legend) -> pd.DataFrame:
    """Pixels and hectares per class of a training-id raster (nodata excluded).

    Returns a table with columns ``class_id``, ``code``, ``name``, ``color``, ``pixels``,
    ``hectares`` and ``percent``.
    """
    n = legend.n_classes
    counts, ha = counts_and_hectares(labels, n + 1)
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


def _pair_codes(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    t = y_true.astype(np.int64).ravel()
    p = y_pred.astype(np.int64).ravel()
    keep = (t > 0) & (t <= n)
    p = np.where((p >= 0) & (p <= n), p, 0)
    return t[keep] * (n + 1) + p[keep]


def _cm_block(t: np.ndarray, p: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(_pair_codes(t, p, n), minlength=(n + 1) ** 2)[None, None, :]


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int) -> np.ndarray:
    """``(N + 1, N + 1)`` counts: rows reference ids, columns predicted ids, index 0 = nodata.

    Pixels whose reference is 0 (nodata) are ignored (row 0 stays empty); a prediction of 0
    ("no prediction") on a labelled pixel is counted in column 0, i.e. as an error. Works on
    numpy arrays, tensors, or dask arrays (one streaming pass over a whole scene).
    """
    t = getattr(y_true, "data", y_true)
    p = getattr(y_pred, "data", y_pred)
    n = int(n_classes)
    if isinstance(t, da.Array) or isinstance(p, da.Array):
        t = t if isinstance(t, da.Array) else da.from_array(np.asarray(t), chunks=1024)
        p = p if isinstance(p, da.Array) else da.from_array(np.asarray(p), chunks=t.chunks)
        if t.shape != p.shape:
            raise ValueError(f"confusion_matrix: shapes differ, {t.shape} vs {p.shape}.")
        p = p.rechunk(t.chunks)
        t2, p2 = (a.reshape(-1, a.shape[-1]) if a.ndim != 2 else a for a in (t, p))
        counts = (
            da.map_blocks(
                _cm_block,
                t2,
                p2,
                n,
                new_axis=2,
                chunks=((1,) * t2.numblocks[0], (1,) * t2.numblocks[1], ((n + 1) ** 2,)),
                dtype=np.int64,
            )
            .sum(axis=(0, 1))
            .compute()
        )
    else:
        t, p = np.asarray(t), np.asarray(p)
        if t.shape != p.shape:
            raise ValueError(f"confusion_matrix: shapes differ, {t.shape} vs {p.shape}.")
        counts = np.bincount(_pair_codes(t, p, n), minlength=(n + 1) ** 2)
    return counts.reshape(n + 1, n + 1)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


#: How the confusion matrices of reports are laid out.
CM_AXES = "rows: reference class id, columns: map (predicted) class id; index 0 = none / no prediction"


def accuracy_report(cm: np.ndarray, legend: Legend, *, unit: str = "pixel") -> dict[str, Any]:
    """Overall accuracy, Cohen's kappa, mean IoU and per-class figures from a confusion matrix.

    Per class: support (reference samples), producer's accuracy (recall), user's accuracy
    (precision), F1 and IoU. Mean IoU averages the classes present in the reference or the
    prediction. Undefined figures are ``None`` in the result. ``samples`` is the number of
    independent samples (each counted once) and ``sample_unit`` what one is (a pixel, or a
    reference feature); ``confusion_matrix_axes`` says which axis is the reference.
    """
    cm = np.asarray(cm, dtype=np.float64)
    n = legend.n_classes
    if cm.shape != (n + 1, n + 1):
        raise ValueError(f"accuracy_report: expected a {(n + 1, n + 1)} matrix, found {cm.shape}.")
    ref = cm[1:, :].sum(axis=1)  # reference pixels per class (prediction 0 counts as wrong)
    pred = cm[1:, 1:].sum(axis=0)
    tp = np.diag(cm)[1:]
    total = ref.sum()
    oa = tp.sum() / total if total else float("nan")
    pe = (ref * np.concatenate([pred])).sum() / total**2 if total else float("nan")
    kappa = (oa - pe) / (1 - pe) if total and pe < 1 else float("nan")
    pa, ua = _ratio(tp, ref), _ratio(tp, pred)
    f1 = _ratio(2 * tp, ref + pred)
    iou = _ratio(tp, ref + pred - tp)
    seen = (ref + pred) > 0

    def num(x: float) -> float | None:
        return None if not np.isfinite(x) else round(float(x), 6)

    return {
        "overall_accuracy": num(oa),
        "kappa": num(kappa),
        "mean_iou": num(np.nanmean(iou[seen])) if seen.any() else None,
        "macro_f1": num(np.nanmean(np.where(ref > 0, f1, np.nan))) if (ref > 0).any() else None,
        "samples": int(total),
        "sample_unit": unit,
        "pixels": int(total) if unit == "pixel" else None,
        "classes": [
            {
                "class_id": k + 1,
                "code": legend.values[k],
                "name": legend.names[k],
                "support": int(ref[k]),
                "producers_accuracy": num(pa[k]),
                "users_accuracy": num(ua[k]),
                "f1": num(f1[k]),
                "iou": num(iou[k]),
            }
            for k in range(n)
        ],
        "confusion_matrix": cm.astype(np.int64).tolist(),
        "confusion_matrix_axes": CM_AXES,
    }


def format_report(report: dict[str, Any], *, only_present: bool = True) -> str:
    """A plain-text table of an :func:`accuracy_report` with class names."""

    def f(x: float | None) -> str:
        return "    -" if x is None else f"{x:5.3f}"

    lines = [
        f"overall accuracy {f(report['overall_accuracy'])}   kappa {f(report['kappa'])}   "
        f"mean IoU {f(report['mean_iou'])}   macro F1 {f(report.get('macro_f1'))}",
        f"{report['samples']:,} independent samples ({_unit_text(report.get('sample_unit', 'pixel'))}, each "
        "counted once); confusion matrix rows = reference, columns = map",
        "",
        f"{'id':>3}  {'class':<28} {'support':>10} {'PA':>6} {'UA':>6} {'F1':>6} {'IoU':>6}",
    ]
    for c in report["classes"]:
        if only_present and c["support"] == 0 and c["users_accuracy"] is None:
            continue
        lines.append(
            f"{c['class_id']:>3}  {c['name'][:28]:<28} {c['support']:>10,} {f(c['producers_accuracy']):>6} "
            f"{f(c['users_accuracy']):>6} {f(c['f1']):>6} {f(c['iou']):>6}"
        )
    return "\n".join(lines)


def format_calibration(record: dict[str, Any]) -> str:
    """How well the probabilities hold on held-out pixels: the expected calibration error and
    negative log-likelihood without and with the model's temperature."""
    b, a = record["before"], record["after"]
    lines = [
        f"calibration on {b['pixels']:,} {record.get('evaluated_on') or 'held-out'} pixels (15 confidence "
        f"bins): expected calibration error {b['ece']:.4f} as trained, {a['ece']:.4f} with temperature "
        f"{record['temperature']:.3f}"
        + (f" (fitted on {record['fitted_on']})" if record.get("fitted_on") else ""),
        f"{'confidence':<10} {'pixels':>9} {'mean conf':>9} {'accuracy':>9} | calibrated: {'pixels':>9} "
        f"{'mean conf':>9} {'accuracy':>9}",
    ]

    def cells(b: dict[str, Any]) -> str:
        conf, acc = b["confidence"], b["accuracy"]
        return (
            f"{b['count']:>9,} {'-' if conf is None else f'{conf:.3f}':>9} "
            f"{'-' if acc is None else f'{acc:.3f}':>9}"
        )

    for before, after in zip(b["bins"], a["bins"], strict=True):
        if before["count"] or after["count"]:
            lines.append(
                f"{before['lower']:4.2f}-{before['upper']:4.2f}  {cells(before)} | {'':>11} {cells(after)}"
            )
    return "\n".join(lines)


def _unit_text(unit: str) -> str:
    return {
        "pixel": "pixels",
        "feature": "reference features",
        "feature-majority": "reference features: a point's pixel, a polygon's majority class",
        "feature-pixels": "pixels of reference features",
    }.get(unit, unit)


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write a report as JSON, atomically."""
    return write_text(path, json.dumps(report, indent=2) + "\n")


def area_table(prediction: xr.DataArray, legend: Legend, labels: xr.DataArray | None = None) -> pd.DataFrame:
    """Pixels and hectares per class of a prediction (and of the reference labels, if given)."""
    pred = class_areas(prediction, legend).rename(
        columns={
            "pixels": "pixels_predicted",
            "hectares": "hectares_predicted",
            "percent": "percent_predicted",
        }
    )
    if labels is None:
        return pred
    ref = class_areas(labels, legend)
    pred["pixels_labels"] = ref["pixels"].to_numpy()
    pred["hectares_labels"] = ref["hectares"].to_numpy()
    pred["percent_labels"] = ref["percent"].to_numpy()
    return pred


def _split_block(block: np.ndarray, layout, block_info=None) -> np.ndarray:
    (r0, r1), (c0, c1) = block_info[None]["array-location"]
    return layout.split_map(slice(r0, r1), slice(c0, c1)).astype(np.int8)


def _aligned(reference: xr.DataArray, prediction: xr.DataArray) -> tuple[da.Array, da.Array]:
    """Both layers as dask arrays, the prediction chunked like the reference."""
    t = (
        reference.data
        if isinstance(reference.data, da.Array)
        else da.from_array(np.asarray(reference.data), chunks=1024)
    )
    p = (
        prediction.data
        if isinstance(prediction.data, da.Array)
        else da.from_array(np.asarray(prediction.data))
    )
    return t, p.rechunk(t.chunks)


def evaluate_prediction(
    prediction: xr.DataArray,
    labels: xr.DataArray,
    legend: Legend,
    *,
    layout=None,
) -> dict[str, Any]:
    """Accuracy of a whole-scene prediction against the cube's labels, lazily, chunk by chunk.

    Returns ``{"all": report}`` plus one report per split area (``"train"``, ``"val"``,
    ``"test"``) when the sampling's split ``layout`` is given, so the held-out test blocks can
    be told apart from the areas the model was trained on.
    """
    t, p = _aligned(labels, prediction)
    out = {"all": accuracy_report(confusion_matrix(t, p, legend.n_classes), legend)}
    if layout is not None:
        smap = t.map_blocks(_split_block, layout, dtype=np.int8)
        for s, name in enumerate(SPLITS):
            ts = da.where(smap == s, t, 0)
            out[name] = accuracy_report(confusion_matrix(ts, p, legend.n_classes), legend)
    return out


def feature_table(ds: xr.Dataset) -> pd.DataFrame:
    """The reference features a cube keeps (``feature_*`` variables) as a DataFrame."""
    cols = ("kind", "code", "class_id", "x", "y", "row", "col", "source_index")
    return pd.DataFrame({"feature": ds["feature"].values, **{c: ds[f"feature_{c}"].values for c in cols}})


def _pair_counts_block(ids: np.ndarray, pred: np.ndarray, nbins: int) -> dict[str, np.ndarray]:
    keep = ids > 0
    key = ids[keep].astype(np.int64) * nbins + pred[keep].astype(np.int64).clip(0, nbins - 1)
    k, c = np.unique(key, return_counts=True)
    return {"key": k, "count": c}


def _feature_pixel_counts(prediction: xr.DataArray, reference_id: xr.DataArray, nbins: int) -> pd.DataFrame:
    """Pixels per (feature, predicted class) pair: one streaming pass, sparse per chunk."""
    import dask

    ids, p = _aligned(reference_id, prediction)
    parts = dask.compute(
        *[
            dask.delayed(_pair_counts_block)(a, b, nbins)
            for a, b in zip(ids.to_delayed().ravel(), p.to_delayed().ravel(), strict=True)
        ]
    )
    key = np.concatenate([q["key"] for q in parts]) if parts else np.zeros(0, np.int64)
    cnt = np.concatenate([q["count"] for q in parts]) if parts else np.zeros(0, np.int64)
    k, inv = np.unique(key, return_inverse=True)
    total = np.bincount(inv, weights=cnt).astype(np.int64)
    return pd.DataFrame({"feature": k // nbins, "predicted": k % nbins, "pixels": total})


def evaluate_features(
    prediction: xr.DataArray,
    table: pd.DataFrame,
    legend: Legend,
    *,
    reference_id: xr.DataArray | None = None,
    rule: str = "majority",
    layout=None,
) -> dict[str, Any]:
    """Accuracy over reference features, each counted once.

    A point is compared with the map at its pixel. A polygon (or multipoint), with
    ``rule="majority"``, counts once with the class most of its pixels are mapped to (ties: the
    lower class id); with ``rule="pixels"`` every one of its pixels counts (the usual but
    optimistic practice: neighbouring pixels are not independent samples). ``reference_id``
    is the raster of feature numbers (the cube's, or :func:`kerinci_xr.vector.rasterize_reference`
    on the map's grid); a polygon whose pixels were all left out (overlaps of other classes,
    too small to cover a pixel centre) is not counted. A feature where the map has no class
    (image nodata: a point on it, a polygon mostly on it) is not counted either, but reported
    (``features["on_nodata"]``): no model could be right or wrong there. With the sampling's split ``layout``,
    one report per split area too (a feature belongs to the area of its point, or of a point
    inside the polygon).

    Returns ``{"all": report, ...}``; ``report["features"]`` holds per-feature results.
    """
    if rule not in ("majority", "pixels"):
        raise InvalidInputError(f"rule: expected 'majority' or 'pixels', found {rule!r}.")
    n = legend.n_classes
    t = table.reset_index(drop=True)
    pts = t["kind"].to_numpy() == 0
    predicted = np.zeros(len(t), dtype=np.int64)
    if pts.any():
        data = (
            prediction.data
            if isinstance(prediction.data, da.Array)
            else da.from_array(np.asarray(prediction.data))
        )
        rows, cols = t.loc[pts, "row"].to_numpy(), t.loc[pts, "col"].to_numpy()
        predicted[pts] = np.asarray(data.vindex[rows, cols].compute()).astype(np.int64)
    pair = None
    if (~pts).any():
        if reference_id is None:
            raise InvalidInputError(
                "evaluate_features: polygons need the raster of feature numbers (reference_id)."
            )
        pair = _feature_pixel_counts(prediction, reference_id, n + 1)
        poly_ids = set(t.loc[~pts, "feature"].tolist())
        pair = pair[pair["feature"].isin(poly_ids)]
        # majority: most pixels, ties to the lower class id (sorted by pixels desc, then class)
        top = pair.sort_values(["feature", "pixels", "predicted"], ascending=[True, False, True])
        top = top.drop_duplicates("feature").set_index("feature")["predicted"]
        where = t.loc[~pts, "feature"].map(top)
        predicted[~pts] = where.fillna(-1).to_numpy().astype(np.int64)
    t["predicted"] = predicted
    no_pixels = (t["predicted"] < 0).to_numpy()
    on_nodata = (t["predicted"] == 0).to_numpy()  # the map has no class there: no model can be scored
    counted = pd.Series(~no_pixels & ~on_nodata)
    if layout is not None:
        t["area"] = np.asarray(SPLITS)[layout.split_of(t["row"].to_numpy(), t["col"].to_numpy())]
    areas = {"all": np.ones(len(t), bool)} | (
        {s: (t["area"] == s).to_numpy() for s in SPLITS} if layout is not None else {}
    )
    out: dict[str, Any] = {}
    for area, sel in areas.items():
        if rule == "pixels" and pair is not None:
            cm = np.zeros((n + 1, n + 1), dtype=np.int64)
            one = sel & pts & counted.to_numpy()
            np.add.at(cm, (t.loc[one, "class_id"].to_numpy(), t.loc[one, "predicted"].to_numpy()), 1)
            cls = t.set_index("feature")["class_id"]
            pp = pair[pair["feature"].isin(set(t.loc[sel & ~pts, "feature"])) & (pair["predicted"] > 0)]
            np.add.at(
                cm, (cls.loc[pp["feature"]].to_numpy(), pp["predicted"].to_numpy()), pp["pixels"].to_numpy()
            )
            unit = "feature-pixels"
        else:
            one = sel & counted.to_numpy()
            cm = confusion_matrix(t.loc[one, "class_id"].to_numpy(), t.loc[one, "predicted"].to_numpy(), n)
            unit = "feature-majority" if (~pts).any() else "feature"
        rep = accuracy_report(cm, legend, unit=unit)
        rep["features"] = {
            "counted": int((sel & counted.to_numpy()).sum()),
            "points": int((sel & pts).sum()),
            "polygons": int((sel & ~pts).sum()),
            "without_pixels": int((sel & no_pixels).sum()),
            "on_nodata": int((sel & on_nodata).sum()),
        }
        out[area] = rep
    out["all"]["feature_results"] = t[
        ["feature", "source_index", "kind", "code", "class_id", "predicted"]
    ].to_dict("list")
    return out
