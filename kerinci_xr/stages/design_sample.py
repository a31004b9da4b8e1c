"""``design-sample``: a stratified random sample of a map's pixels for accuracy and area estimation."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from .._locations import as_location
from .._options import option
from .._outputs import write_atomic
from .._products import Kind
from ..accuracy import MIN_PER_CLASS, Allocation, allocate, draw_stratified, sample_size_for_overall_accuracy
from ..errors import InvalidInputError
from ..legend import Legend
from ..metrics import counts_and_hectares
from ..prediction import open_class_map, open_prediction
from ._base import Context, DaskOptions, Stage

__all__ = ["STAGE", "DesignOptions", "map_class_columns", "place_columns", "write_points"]

#: Formats by extension: GeoPackage and GeoJSON point layers (QGIS opens both), or CSV.
DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".csv": None}


@dataclass(kw_only=True)
class DesignOptions(DaskOptions):
    map: str = option(
        help="class map: prediction.zarr or the COG predict wrote",
        positional=True,
        io="in",
        kind=Kind.PREDICTION,
    )
    n: int = option(600, "total sample units (see --target-se)", ge=1)
    min_per_class: int = option(MIN_PER_CLASS, "at least this many units in every mapped class", ge=0)
    allocation: Allocation = option("proportional", "units per class: by mapped area, equal, or Neyman")
    expected_ua: tuple[str, ...] | None = option(
        None, "expected user's accuracy per class as CODE=UA pairs (others 0.9), for neyman and --target-se"
    )
    target_se: float | None = option(
        None, "choose n for this standard error of overall accuracy (Cochran)", gt=0
    )
    strata: Literal["map", "uncertainty"] = option(
        "map",
        "strata: the map's classes, or each class split into low and high uncertainty (entropy; a "
        "prediction store): assess then uses Stehman (2014)'s estimators",
    )
    uncertain_share: float = option(
        0.25,
        "with --strata uncertainty: the share of mapped pixels, the most uncertain, in the high strata",
        gt=0,
        le=0.9,
    )
    seed: int = option(0, "same seed, same points, whatever the chunking", ge=0)
    out: str = option(
        help="sample points: .gpkg, .geojson or .csv",
        io="out",
        kind=Kind.SAMPLE_DESIGN,
        run_name="sample.gpkg",
    )
    overwrite: bool = option(False, "replace an existing sample", pipeline=False)


def expected_ua(pairs: tuple[str, ...] | None, legend: Legend) -> np.ndarray:
    """Expected user's accuracy per class (training id order) from ``CODE=UA`` pairs; 0.9 otherwise."""
    out = np.full(legend.n_classes, 0.9)
    for pair in pairs or ():
        code, _, value = pair.partition("=")
        try:
            k, u = legend.id_of(int(code)), float(value)
        except ValueError:
            k, u = 0, -1.0
        if k == 0 or not 0 <= u <= 1:
            raise InvalidInputError(
                f"expected_ua: expected CODE=UA with a legend code and 0 <= UA <= 1, found {pair!r}. "
                "Fix: e.g. --expected-ua 2001=0.9,2007=0.6"
            )
        out[k - 1] = u
    return out


def map_class_columns(ids: np.ndarray, legend: Legend) -> dict[str, Any]:
    """A point table's map class fields: training id, legend code and name."""
    return {
        "map_id": ids,
        "map_code": np.asarray([0, *legend.values])[ids],
        "map_name": [legend.name_of(int(i)) for i in ids],
    }


def place_columns(rows: np.ndarray, cols: np.ndarray, transform: Any) -> dict[str, Any]:
    """A point table's pixel (row, col), the pixel centre's map x/y, and the empty ``reference``
    field an interpreter fills."""
    return {
        "row": rows,
        "col": cols,
        "x": transform.c + (cols + 0.5) * transform.a,
        "y": transform.f + (rows + 0.5) * transform.e,
        "reference": pd.Series([None] * len(rows), dtype="string"),
    }


def write_points(table: pd.DataFrame, path: str | os.PathLike, crs: Any, *, overwrite: bool = False) -> Any:
    """Points with map x/y as a GeoPackage or GeoJSON layer in ``crs``, or as CSV."""
    target = as_location(path)
    driver = DRIVERS[target.suffix.lower()]
    if driver is None:
        return write_atomic(
            target, lambda tmp: table.to_csv(tmp, index=False, float_format="%.10g"), overwrite=overwrite
        )
    import geopandas as gpd

    layer = gpd.GeoDataFrame(table, geometry=gpd.points_from_xy(table["x"], table["y"]), crs=crs)
    return write_atomic(
        target, lambda tmp: layer.to_file(tmp, driver=driver, layer=target.stem), overwrite=overwrite
    )


def uncertainty_strata(path: Any, classes: Any, share: float) -> tuple[Any, float]:
    """Strata of each class split by uncertainty: ``2 (class - 1) + 1`` low, ``+ 2`` high, where
    the entropy exceeds the quantile that leaves ``share`` of the mapped pixels above it (from a
    1000-bin histogram, one pass); 0 where the map has no class."""
    import dask.array as da

    pred = open_prediction(path)
    if "entropy" not in pred:
        raise InvalidInputError(
            f"{path}: --strata uncertainty needs the entropy layer of a prediction store (kerinci-xr predict "
            "writes it). Fix: pass the prediction store, predicted with this version."
        )
    ent = pred["entropy"].data
    mapped = pred["classes"].data > 0
    hist, edges = da.histogram(da.where(mapped, ent, -1.0), bins=1000, range=(0.0, 1.0))
    cum = np.cumsum(hist.compute()[::-1])[::-1]  # pixels at or above each bin's lower edge
    above = np.flatnonzero(cum >= share * cum[0])
    threshold = float(edges[above[-1]]) if above.size else 0.0
    cls = pred["classes"]
    strata = xr.where(cls > 0, 2 * (cls.astype(np.int16) - 1) + 1 + (pred["entropy"] > threshold), 0)
    strata = (
        strata.astype(np.uint8).rio.write_crs(classes.rio.crs).rio.write_transform(classes.rio.transform())
    )
    return strata, threshold


def run(o: DesignOptions, ctx: Context) -> dict[str, Any]:
    suffix = as_location(o.out).suffix
    if suffix.lower() not in DRIVERS:
        raise InvalidInputError(f"{o.out}: expected a .gpkg, .geojson or .csv output, found {suffix!r}.")
    classes, legend = open_class_map(o.map)
    if o.n > classes.size:  # before any pass over the map
        raise InvalidInputError(
            f"--n {o.n}: more sample units than the {classes.size:,} pixels of {o.map}. Fix: a sample "
            "of at most that many units (a few hundred to a few thousand is usual)."
        )
    ua = expected_ua(o.expected_ua, legend)
    strata, names, strata_of, class_of = classes, list(legend.names), "map", np.arange(legend.n_classes + 1)
    if o.strata == "uncertainty":
        strata, threshold = uncertainty_strata(o.map, classes, o.uncertain_share)
        names = [f"{n} / {u} uncertainty" for n in legend.names for u in ("low", "high")]
        strata_of = f"map classes x uncertainty (entropy above {threshold:.4f}: high)"
        class_of = np.r_[0, np.repeat(np.arange(1, legend.n_classes + 1), 2)]
        ua = np.repeat(ua, 2)
        ctx.echo(
            f"uncertainty strata: entropy above {threshold:.4f} is high "
            f"({100 * o.uncertain_share:g} % of pixels)"
        )
    n_strata = len(names)

    def units_for(size: np.ndarray) -> np.ndarray:  # from the pixel counts of the same pass
        n = o.n
        if o.target_se is not None:
            n = sample_size_for_overall_accuracy(size[1 : n_strata + 1], ua, target_se=o.target_se)
            ctx.echo(f"n = {n} for a standard error of overall accuracy of {o.target_se}")
        if n > size[1:].sum():
            raise InvalidInputError(
                f"n = {n}: more sample units than the {int(size[1:].sum()):,} mapped pixels of {o.map}. "
                "Fix: a smaller --n (or a larger --target-se)."
            )
        alloc = allocate(
            size[1 : n_strata + 1],
            n,
            min_per_class=o.min_per_class,
            method=o.allocation,
            expected_users_accuracy=ua,
        )
        return np.r_[0, alloc]  # class 0: nodata, never a stratum

    # no stratum gets more than n (or, for a target SE, more than (0.5 / SE)^2: sum W_h S_h <= 0.5)
    bound = o.n if o.target_se is None else int(np.ceil((0.5 / o.target_se) ** 2))
    points = draw_stratified(
        strata, units_for, seed=o.seed, max_units=max(bound, o.min_per_class), progress=ctx.progress
    )
    size, units = points.attrs["stratum_sizes"], points.attrs["units"]
    hectares = counts_and_hectares(strata, n_strata + 1)[1]
    tr = classes.rio.transform()
    h = points["stratum"].to_numpy()
    k = class_of[h]
    table = pd.DataFrame(
        {
            "sample_id": np.arange(len(points)),
            "stratum": h,
            "stratum_name": [names[i - 1] for i in h],
            "strata_of": strata_of,
            "stratum_size": size[h],
            "stratum_area_ha": hectares[h],
            **map_class_columns(k, legend),
            "inclusion_probability": units[h] / size[h],
            **place_columns(points["row"].to_numpy(), points["col"].to_numpy(), tr),
        }
    )
    for i in np.flatnonzero(units):
        ctx.echo(f"{names[i - 1][:44]:<44} {size[i]:>12,} pixels  {units[i]:>5} units")
    total, strata_n = int(units.sum()), int((units > 0).sum())
    if o.target_se is None and total > o.n:
        floor = int(np.minimum(o.min_per_class, size[1:]).sum())
        fits = o.n // max(strata_n, 1)
        ctx.echo(
            f"note: {total} units, not --n {o.n}: --min-per-class {o.min_per_class} in each of the "
            f"{strata_n} strata needs {floor} units alone. Fix: --min-per-class {fits} (or fewer) draws "
            f"{o.n}, or raise --n."
        )
    return {
        "sample_design": write_points(table, o.out, classes.rio.crs, overwrite=o.overwrite),
        "points": table,
    }


STAGE = Stage(
    "design-sample",
    "a stratified random sample of a map's pixels, for accuracy and area estimation",
    DesignOptions,
    run,
    "kerinci-xr design-sample prediction.zarr --n 600 --min-per-class 50 --seed 0 --out sample.gpkg",
    args=("map",),
)
