"""``suggest``: the next reference points for an interpreter, where the map is least sure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._locations import as_location
from .._options import option
from .._products import Kind
from ..active import Uncertainty, suggest_points
from ..cube import cube_view, open_cube
from ..errors import InvalidInputError
from ..io import grid_differences
from ..legend import legend_of
from ..pixels import labelled_pixels
from ..prediction import open_prediction
from ..vector import read_points
from ._base import Context, DaskOptions, Stage
from .design_sample import DRIVERS, map_class_columns, place_columns, write_points

__all__ = ["STAGE", "SuggestOptions"]


@dataclass(kw_only=True)
class SuggestOptions(DaskOptions):
    map: str = option(
        help="prediction store (.zarr) with the entropy and margin layers predict writes",
        positional=True,
        io="in",
        kind=Kind.PREDICTION,
    )
    n: int = option(200, "points to suggest", ge=1)
    by: Uncertainty = option(
        "entropy", "the uncertainty the points are chosen by: entropy, margin (smallest first) or random"
    )
    min_distance: float = option(
        10.0, "at least this many pixels between suggested points, and to every existing label", ge=0
    )
    labels: tuple[str, ...] | None = option(
        None, "existing labelled points (vector files, e.g. earlier rounds) to keep away from", io="in"
    )
    cube: str | None = option(
        None, "a cube whose labelled pixels to keep away from (sparse labels: the training points)", io="in"
    )
    date: str | None = option(None, "a prediction of several dates: the date to suggest on")
    seed: int = option(0, "breaks ties (and seeds --by random)", ge=0)
    out: str = option(
        help="the points: .gpkg, .geojson or .csv, with an empty reference field to fill",
        io="out",
        kind=Kind.SUGGESTIONS,
        run_name="suggest.gpkg",
    )
    overwrite: bool = option(False, "replace an existing file", pipeline=False)


def _taken(o: SuggestOptions, pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the labels the suggestions must keep away from."""
    rows, cols = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    if o.cube is not None:
        cube = cube_view(open_cube(o.cube))
        if "labels" not in cube:
            raise InvalidInputError(f"{o.cube}: the cube has no labels to keep away from.")
        diffs = grid_differences(cube["labels"], pred["classes"])
        if diffs:
            raise InvalidInputError(
                f"{o.cube}: expected the map's grid, found differences: {'; '.join(diffs)}."
            )
        r, c, _, _ = labelled_pixels(cube)
        if r.size > 0.5 * cube.sizes["y"] * cube.sizes["x"]:
            raise InvalidInputError(
                f"{o.cube}: labels cover {r.size:,} pixels, over half of the map: suggestions are for sparse "
                "labels. Fix: leave out --cube (or pass the earlier points with --labels)."
            )
        rows.append(r)
        cols.append(c)
    inverse = ~pred.rio.transform()
    for path in o.labels or ():
        table, crs = read_points(path)
        if crs is None:
            raise InvalidInputError(f"{path}: expected a point layer with a CRS (GeoPackage, GeoJSON).")
        pts = table.to_crs(pred.rio.crs).geometry.representative_point()
        col, row = inverse * (pts.x.to_numpy(), pts.y.to_numpy())
        rows.append(np.floor(row).astype(np.int64))
        cols.append(np.floor(col).astype(np.int64))
    return np.concatenate(rows), np.concatenate(cols)


def run(o: SuggestOptions, ctx: Context) -> dict[str, Any]:
    suffix = as_location(o.out).suffix
    if suffix.lower() not in DRIVERS:
        raise InvalidInputError(f"{o.out}: expected a .gpkg, .geojson or .csv output, found {suffix!r}.")
    pred = open_prediction(o.map, date=o.date)
    legend = legend_of(pred["classes"])
    taken = _taken(o, pred)
    picked = suggest_points(pred, o.n, by=o.by, min_distance=o.min_distance, taken=taken, seed=o.seed)
    tr = pred.rio.transform()
    k = picked["class_id"].to_numpy(np.int64)
    table = pd.DataFrame(
        {
            "sample_id": np.arange(len(picked)),
            **map_class_columns(k, legend),
            "chosen_by": o.by,
            "score": picked["score"].to_numpy(),
            **{
                name: picked[name].to_numpy()
                for name in ("confidence", "margin", "entropy")
                if name in picked
            },
            **place_columns(picked["row"].to_numpy(), picked["col"].to_numpy(), tr),
        }
    )
    if len(table) < o.n:
        ctx.echo(
            f"warning: {len(table)} of {o.n} points: no more pixels lie {o.min_distance:g} pixels from every "
            "other point and label. Fix: a smaller --min-distance."
        )
    counts = table["map_name"].value_counts()
    ctx.echo(
        f"{len(table)} points by {o.by}, at least {o.min_distance:g} pixels apart and from {taken[0].size:,} "
        f"existing label(s): " + ", ".join(f"{name} {n}" for name, n in counts.items())
    )
    return {"suggestions": write_points(table, o.out, pred.rio.crs, overwrite=o.overwrite), "points": table}


STAGE = Stage(
    "suggest",
    "the next points to label (active learning): most uncertain, spread over map classes and apart",
    SuggestOptions,
    run,
    "kerinci-xr suggest prediction.zarr --n 200 --labels points.gpkg --out next.gpkg",
    args=("map",),
)
