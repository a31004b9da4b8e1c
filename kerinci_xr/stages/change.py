"""``change``: from-to map, transition matrix and gross/net change between two class maps."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .._locations import as_location
from .._options import option
from .._outputs import write_atomic, write_text
from .._products import Kind
from ..changes import change_codes, gross_net, transition_legend, transition_matrix, transitions_table
from ..cube import write_cube
from ..errors import InvalidInputError
from ..io import write_cog
from ..legend import Legend
from ..prediction import open_class_map, open_prediction
from ..preprocess import remap_labels
from ._base import Context, DaskOptions, Stage

__all__ = ["STAGE", "ChangeOptions"]


@dataclass(kw_only=True)
class ChangeOptions(DaskOptions):
    map_a: str = option(
        help="the earlier map (prediction.zarr or COG), or one store with dates",
        positional=True,
        io="in",
        kind=Kind.PREDICTION,
    )
    map_b: str | None = option(None, "the later map (same grid and legend)", positional=True, io="in")
    from_date: str | None = option(None, "with one store of several dates: the earlier (default: first)")
    to_date: str | None = option(None, "with one store of several dates: the later (default: last)")
    min_confidence: float | None = option(
        None, "also mark pixels below this confidence at either date", ge=0, le=1
    )
    out: str = option(
        help="change store (.zarr): transition codes (and the low-confidence mask)",
        io="out",
        kind=Kind.CHANGE,
        run_name="change.zarr",
    )
    cog: str | None = option(
        None,
        "also the from-to map as a COG with colours and names",
        io="out",
        kind=Kind.CHANGE_COG,
        run_name="change.tif",
    )
    transitions: str | None = option(
        None,
        "transition table (CSV): pixels and hectares per pair",
        io="out",
        kind=Kind.TRANSITIONS,
        run_name="transitions.csv",
    )
    summary: str | None = option(
        None,
        "gross loss, gain and net change per class, and the matrix (JSON)",
        io="out",
        kind=Kind.CHANGE_SUMMARY,
        run_name="change.json",
    )
    overwrite: bool = option(False, "replace existing outputs", pipeline=False)


def _maps(o: ChangeOptions) -> tuple[list[xr.DataArray], list[Any], Legend, list[str]]:
    """The two maps, their confidence layers (or None), the legend, and what to call them."""
    first, legend = open_class_map(o.map_a, all_dates=True)
    if o.map_b is None:
        if "time" not in first.dims or first.sizes["time"] < 2:
            raise InvalidInputError(
                f"{o.map_a}: change needs two dates: a second map, or a store predicted for several dates "
                "(predict --all-dates)."
            )
        dates = [str(t)[:10] for t in first["time"].values]
        pick = [o.from_date or dates[0], o.to_date or dates[-1]]
        for d in pick:
            if d not in dates:
                raise InvalidInputError(f"{o.map_a}: no date {d}; it has {dates}.")
        if pick[0] == pick[1]:
            raise InvalidInputError(f"{o.map_a}: the two dates are the same ({pick[0]}).")
        maps = [first.sel(time=d).drop_vars("time") for d in pick]
        conf: list[Any] = (
            [open_prediction(o.map_a, all_dates=True)["confidence"].sel(time=d) for d in pick]
            if o.min_confidence
            else [None] * 2
        )
        return maps, conf, legend, [f"{o.map_a} {d}" for d in pick]
    second, legend_b = open_class_map(o.map_b)
    if Path(o.map_a).resolve() == Path(o.map_b).resolve():
        raise InvalidInputError(f"{o.map_b}: the same map twice; change needs two dates.")
    if "time" in first.dims or "time" in second.dims:
        raise InvalidInputError("two maps given: each must hold one date (pass one store with dates alone).")
    if legend_b.values != legend.values:
        raise InvalidInputError(
            f"{o.map_b}: expected the legend of {o.map_a} (codes {list(legend.values)}), found codes "
            f"{list(legend_b.values)}. Fix: compare maps predicted with one legend."
        )
    conf = [None, None]
    if o.min_confidence is not None:
        for k, path in enumerate((o.map_a, o.map_b)):
            if not Path(path).is_dir():
                raise InvalidInputError(
                    f"{path}: --min-confidence needs prediction stores (with confidence)."
                )
            conf[k] = open_prediction(path)["confidence"]
    return [first, second], conf, legend, [str(o.map_a), str(o.map_b)]


def run(o: ChangeOptions, ctx: Context) -> dict[str, Any]:
    (a, b), conf, legend, names = _maps(o)
    codes = change_codes(a, b, legend, names=(names[0], names[1]))
    matrix = transition_matrix(codes, legend)
    tl = transition_legend(matrix)
    layers = {"transition": codes}
    codes.attrs = tl.cf_attrs("land-cover transition: from_id * (N + 1) + to_id") | {
        "flag_values": [0, *tl.values],
        "legend": legend.to_json(),
        "transition_legend": tl.to_json(),
    }
    if o.min_confidence is not None:
        low = (conf[0] < o.min_confidence) | (conf[1].assign_coords(y=a["y"], x=a["x"]) < o.min_confidence)
        layers["low_confidence"] = low.rename("low_confidence").assign_attrs(
            long_name=f"confidence below {o.min_confidence} at either date"
        )
    ds = xr.Dataset(layers).rio.write_crs(a.rio.crs).rio.write_transform(a.rio.transform())
    ds.attrs = {
        "title": "kerinci_xr change",
        "legend": legend.to_json(),
        "before": names[0],
        "after": names[1],
    }
    written: dict[str, Any] = {"change": write_cube(ds, o.out, overwrite=o.overwrite, progress=ctx.progress)}
    table = transitions_table(matrix)
    net = gross_net(matrix)
    if o.cog is not None:
        ids = remap_labels(codes, tl).rio.write_crs(a.rio.crs).rio.write_transform(a.rio.transform())
        written["change_cog"] = write_cog(ids, o.cog, legend=tl, overwrite=o.overwrite)
        written["change_cog_style"] = as_location(o.cog).with_suffix(".qml")
    if o.transitions is not None:
        written["transitions"] = write_atomic(
            o.transitions,
            lambda tmp: table.to_csv(tmp, index=False, float_format="%.4f"),
            overwrite=o.overwrite,
        )
    low_pixels = int(layers["low_confidence"].sum().compute()) if "low_confidence" in layers else None
    summary = {
        "before": names[0],
        "after": names[1],
        "pixels_compared": int(matrix.pixels.sum()),
        "pixels_changed": int(matrix.pixels.sum() - np.trace(matrix.pixels)),
        "pixels_excluded": matrix.excluded,
        "hectares_changed": float(matrix.hectares.sum() - np.trace(matrix.hectares)),
        "low_confidence_pixels": low_pixels,
        "classes": net.to_dict(orient="records"),
        "transitions": table.to_dict(orient="records"),
    }
    if o.summary is not None:
        written["change_summary"] = write_text(
            o.summary, json.dumps(summary, indent=2, default=float) + "\n", overwrite=o.overwrite
        )
    ctx.echo(
        f"{summary['pixels_changed']:,} of {summary['pixels_compared']:,} pixels changed "
        f"({summary['hectares_changed']:,.1f} ha); {matrix.excluded:,} without a class at either date"
    )
    ctx.echo(net.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
    return written | {"matrix": matrix, "summary": summary}


def _side(o: ChangeOptions) -> dict[str, Any]:
    return {"change_cog_style": as_location(o.cog).with_suffix(".qml")} if o.cog else {}


STAGE = Stage(
    "change",
    "from-to map, transition matrix and gross/net change between two class maps",
    ChangeOptions,
    run,
    "kerinci-xr change map_2015.tif map_2023.tif --out change.zarr --cog change.tif --transitions t.csv",
    args=("map_a", "map_b"),
    extra_products=_side,
)
