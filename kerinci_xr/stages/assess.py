"""``assess``: accuracy and error-adjusted areas with 95 % CIs from a labelled sample of a map."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._options import option
from .._outputs import write_atomic
from .._products import Kind
from ..accuracy import strata_estimates, stratified_estimates
from ..cube import cube_view, open_cube
from ..errors import GridMismatchError, InvalidInputError
from ..io import grid_differences
from ..legend import Legend
from ..metrics import class_areas, write_report
from ..prediction import open_class_map
from ..vector import parse_codes, read_points
from ._base import Context, DaskOptions, Stage

__all__ = ["STAGE", "AssessOptions", "format_assessment", "read_points"]


@dataclass(kw_only=True)
class AssessOptions(DaskOptions):
    map: str = option(
        help="class map: prediction.zarr or the COG predict wrote",
        positional=True,
        io="in",
        kind=Kind.PREDICTION,
    )
    reference: str = option(
        help="the labelled sample (.gpkg, .geojson or .csv)", io="in", kind=Kind.SAMPLE_DESIGN
    )
    label_field: str = option("reference", "the sample's field of reference classes (legend codes or names)")
    truth: str | None = option(
        None, "simulate the interpreter: fill the field from this cube's labels", io="in"
    )
    out: str = option(help="estimates (JSON)", io="out", kind=Kind.ASSESSMENT, run_name="accuracy.json")
    csv: str | None = option(
        None, "also the table per class (CSV)", io="out", kind=Kind.ASSESSMENT_CSV, run_name="accuracy.csv"
    )
    overwrite: bool = option(False, "replace existing outputs", pipeline=False)


def _pixels(table: pd.DataFrame, crs: Any, classes) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each point on the map's grid (from row/col, else from the points)."""
    if {"row", "col"} <= set(table.columns):
        return table["row"].to_numpy(np.int64), table["col"].to_numpy(np.int64)
    if crs is not None:
        pts = table.to_crs(classes.rio.crs).geometry
        x, y = pts.x.to_numpy(), pts.y.to_numpy()
    elif {"x", "y"} <= set(table.columns):
        x, y = table["x"].to_numpy(float), table["y"].to_numpy(float)
    else:
        raise InvalidInputError("the sample has neither row/col, nor point geometry, nor x/y columns.")
    col, row = ~classes.rio.transform() * (x, y)
    return np.floor(row).astype(np.int64), np.floor(col).astype(np.int64)


def stratum_sizes(table: pd.DataFrame, source: Any) -> tuple[dict[int, float], dict[int, float]]:
    """Each stratum's size (hectares, else pixels: the estimator's weights) and pixel count, from
    the sample's ``stratum_area_ha`` / ``stratum_size`` fields, else from its inclusion
    probabilities (``N_h = n_h / pi_h``, all of the stratum's drawn units counted)."""
    h = table["stratum"].to_numpy(np.int64)
    if "stratum_size" in table.columns:
        px = pd.Series(table["stratum_size"].to_numpy(float), index=h).groupby(level=0).first()
    elif "inclusion_probability" in table.columns:
        n = pd.Series(h).value_counts()
        pi = pd.Series(table["inclusion_probability"].to_numpy(float), index=h).groupby(level=0).first()
        px = (n / pi).round()
    else:
        raise InvalidInputError(
            f"{source}: the strata of this sample differ from the map's classes, and it records neither "
            "their sizes (stratum_size) nor inclusion probabilities. Fix: assess with the sample file "
            "kerinci-xr design-sample wrote (it records both)."
        )
    weights = px
    if "stratum_area_ha" in table.columns:
        weights = pd.Series(table["stratum_area_ha"].to_numpy(float), index=h).groupby(level=0).first()
    if not (np.isfinite(px.to_numpy()).all() and (px.to_numpy() > 0).all()):
        raise InvalidInputError(f"{source}: its stratum sizes must be finite and > 0.")
    return {int(k): float(v) for k, v in weights.items()}, {int(k): float(v) for k, v in px.items()}


def _reference_ids(values: pd.Series, legend: Legend, source: str, label_field: str) -> np.ndarray:
    """Training ids of reference values (codes or names, parsed as vector labels are); 0 where the
    interpreter left the field empty."""
    codes = parse_codes(values, legend, source=source, label_field=label_field)
    given = ~np.isnan(codes)
    out = np.zeros(len(codes), dtype=np.int64)
    out[given] = [legend.id_of(int(c)) for c in codes[given]]
    unknown = sorted({int(c) for c in codes[given & (out == 0)]})
    if unknown:
        raise InvalidInputError(
            f"{source}: reference codes {unknown[:10]} are not in the legend {legend.source}. "
            f"Fix: use the codes of lc.json (e.g. {legend.values[0]}) or its class names."
        )
    return out


def run(o: AssessOptions, ctx: Context) -> dict[str, Any]:
    classes, legend = open_class_map(o.map)
    table, crs = read_points(o.reference)
    rows, cols = _pixels(table, crs, classes)
    h, w = classes.shape
    outside = int(((rows < 0) | (rows >= h) | (cols < 0) | (cols >= w)).sum())
    if outside:
        raise InvalidInputError(f"{o.reference}: {outside} sample point(s) lie outside the map {o.map}.")
    mapped = np.asarray(
        classes.data.vindex[rows, cols].compute()
        if hasattr(classes.data, "vindex")
        else classes.values[rows, cols]
    ).astype(np.int64)
    stratified = "stratum" in table.columns
    strata = table["stratum"].to_numpy(np.int64) if stratified else np.zeros(0, np.int64)
    # the strata are the map's classes unless the sample says otherwise (uncertainty strata), or
    # its points fall in other classes of this map (a sample drawn from another map)
    kind = str(table["strata_of"].iloc[0]) if stratified and "strata_of" in table.columns else "map"
    differ = stratified and (kind != "map" or bool(np.any(strata != mapped)))
    if o.truth is not None:
        cube = cube_view(open_cube(o.truth))
        diffs = grid_differences(cube["labels"], classes)
        if diffs:
            raise GridMismatchError(
                f"{o.truth}: expected the map's grid, found differences: {'; '.join(diffs)}."
            )
        ref = cube["labels"].data.vindex[rows, cols].compute().astype(np.int64)
    elif o.label_field not in table.columns:
        raise InvalidInputError(
            f"{o.reference}: expected a field {o.label_field!r} of reference classes, found "
            f"{list(table.columns)}. Fix: name the field with --label-field."
        )
    else:
        ref = _reference_ids(table[o.label_field], legend, str(o.reference), o.label_field)
    k = legend.n_classes
    if not (ref > 0).any():
        raise InvalidInputError(
            f"{o.reference}: none of its {len(ref)} point(s) has a reference class in the field "
            f"{o.label_field!r}: an unfilled sample has no accuracy. Fix: fill the field (QGIS, Collect "
            "Earth), or pass --truth CUBE to simulate the interpreter from a cube's labels."
        )
    areas = class_areas(classes, legend)
    names = list(legend.names)
    if differ:
        used = ref > 0
        sizes, pixels = stratum_sizes(table, o.reference)
        est = strata_estimates(
            strata[used], mapped[used], ref[used], sizes, n_classes=k, names=names, stratum_pixels=pixels
        )
        estimator = "stratified, strata differ from this map's classes (Stehman 2014, eqs. 25-28); " + (
            f"strata: {kind}" if kind != "map" else "strata: the classes of another map"
        )
    else:
        used = (ref > 0) & (mapped > 0)
        counts = np.zeros((k, k))
        np.add.at(counts, (mapped[used] - 1, ref[used] - 1), 1)
        est = stratified_estimates(counts, areas["hectares"].to_numpy(), names=names)
        estimator = (
            "stratified, strata = map classes"
            if stratified
            else "post-stratified by map class (simple random or systematic sample)"
        ) + " (Olofsson et al. 2014, eqs. 1-10)"
    keep = [i for i in range(k) if areas["pixels"].iloc[i] > 0 or (ref[used] == i + 1).any()]
    result = {
        "estimator": estimator,
        "strata_differ_from_map": bool(differ),
        "reference": {"file": str(o.reference), "field": o.label_field, "simulated_from": o.truth},
        "sample_size": int(used.sum()),
        "empty_reference": int((ref == 0).sum()),
        "on_map_nodata": int((mapped == 0).sum()),
        "overall_accuracy": est["overall_accuracy"],
        "classes": [
            {
                "id": i + 1,
                "code": legend.values[i],
                "name": legend.names[i],
                "map_area_ha": float(areas["hectares"].iloc[i]),
                "sample_size": est["classes"][i]["sample_size"],
                "users_accuracy": est["classes"][i]["users_accuracy"],
                "producers_accuracy": est["classes"][i]["producers_accuracy"],
                "area_ha": est["classes"][i]["area"],
            }
            for i in keep
        ],
        "error_matrix_proportions": {
            "rows": "map",
            "columns": "reference",
            "classes": [legend.values[i] for i in keep],
            "values": [[est["error_matrix_proportions"]["values"][i][j] for j in keep] for i in keep],
        },
        "warnings": est.get("warnings", []),
    }
    if differ:
        result["strata"] = est["strata"]
    if result["empty_reference"]:
        result["warnings"].append(
            f"{result['empty_reference']} sample point(s) have no reference value: left out."
        )
    if o.truth is not None:
        result["warnings"].append(f"the reference was simulated from the labels of {o.truth}.")
    for text in result["warnings"]:
        ctx.echo(f"warning: {text}")
    ctx.echo(format_assessment(result))
    written: dict[str, Any] = {"assessment": write_report(result, o.out), "result": result}
    if o.csv is not None:
        frame = assessment_table(result)
        written["assessment_csv"] = write_atomic(
            o.csv, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"), overwrite=o.overwrite
        )
    return written


def assessment_table(result: dict[str, Any]) -> pd.DataFrame:
    """One row per class: mapped area, sample size, and each estimate with its SE and 95 % CI."""
    rows = []
    for c in result["classes"]:
        row = {k: c[k] for k in ("id", "code", "name", "map_area_ha", "sample_size")}
        for key in ("users_accuracy", "producers_accuracy", "area_ha"):
            e = c[key]
            ci = e["ci95"] or [None, None]
            row |= {
                key: e["estimate"],
                f"{key}_se": e["se"],
                f"{key}_ci95_low": ci[0],
                f"{key}_ci95_high": ci[1],
            }
        rows.append(row)
    return pd.DataFrame(rows)


def format_assessment(result: dict[str, Any]) -> str:
    """The estimates as a printed table (estimate +- half the 95 % interval)."""

    def pm(e: dict[str, Any], fmt: str) -> str:
        if e["estimate"] is None:
            return "-"
        half = "" if e["se"] is None else f" +- {format(1.96 * e['se'], fmt)}"
        return format(e["estimate"], fmt) + half

    oa = result["overall_accuracy"]
    lines = [
        f"{result['estimator']}; {result['sample_size']} sample units",
        *(
            ["the sample's strata are not this map's classes: Stehman (2014)'s estimators are used"]
            if result.get("strata_differ_from_map")
            else []
        ),
        f"overall accuracy (design-based estimate from the sample, +- 95 % CI) {pm(oa, '.3f')}",
        "",
        f"{'class':<28} {'n':>5} {'mapped ha':>12} {'adjusted ha (95 % CI)':>26} {'UA':>14} {'PA':>14}",
    ]
    for c in result["classes"]:
        lines.append(
            f"{c['name'][:28]:<28} {c['sample_size']:>5} {c['map_area_ha']:>12,.1f} "
            f"{pm(c['area_ha'], ',.1f'):>26} {pm(c['users_accuracy'], '.3f'):>14} "
            f"{pm(c['producers_accuracy'], '.3f'):>14}"
        )
    return "\n".join(lines)


STAGE = Stage(
    "assess",
    "accuracy and error-adjusted areas with 95 % CIs from a labelled sample (Olofsson et al. 2014; "
    "Stehman 2014 when its strata are not the map's classes)",
    AssessOptions,
    run,
    "kerinci-xr assess prediction.zarr --reference sample.gpkg --label-field reference --out accuracy.json",
    args=("map",),
)
