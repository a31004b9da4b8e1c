"""``predict``: the whole scene, seamlessly: prediction.zarr, COG, class areas, metrics per split."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from .._locations import as_location
from .._options import option
from .._outputs import write_atomic, write_text
from .._products import Kind
from ..checkpoint import load_checkpoint
from ..cube import cube_legend, cube_view, dates_of, open_cube, write_cube
from ..errors import InvalidInputError
from ..io import write_cog, write_image_cog
from ..legend import legend_of
from ..metrics import area_table, evaluate_prediction, write_report
from ..patches import stored_layout
from ..prediction import PREDICT_CHUNK, open_prediction, predict_scene
from ._base import Context, DaskOptions, Stage

__all__ = ["STAGE", "PredictOptions"]


@dataclass(kw_only=True)
class PredictOptions(DaskOptions):
    cube: str = option(help="cube (.zarr)", positional=True, io="in", kind=Kind.CUBE)
    model: str = option(help="checkpoint (.pt)", io="in", kind=Kind.MODEL)
    patches: str | None = option(
        None, "patch store whose split layout gives per-split metrics", io="in", kind=Kind.PATCHES
    )
    out: str = option(
        help="prediction store (.zarr): class, confidence, margin and entropy (calibrated when the model is)",
        io="out",
        kind=Kind.PREDICTION,
        run_name="prediction.zarr",
    )
    cog: str | None = option(
        None,
        "also write the class map as a Cloud-Optimised GeoTIFF",
        io="out",
        kind=Kind.COG,
        run_name="map.tif",
    )
    uncertainty_cog: str | None = option(
        None,
        "also write the uncertainty (bands entropy, margin, confidence; NaN where invalid) as a float32 COG",
        io="out",
        kind=Kind.UNCERTAINTY_COG,
        run_name="uncertainty.tif",
    )
    areas: str | None = option(
        None,
        "also write hectares per class (CSV, plus JSON beside it)",
        io="out",
        kind=Kind.AREAS,
        run_name="areas.csv",
    )
    metrics: str | None = option(
        None,
        "also write whole-scene accuracy against the cube's labels (JSON)",
        io="out",
        kind=Kind.SCENE_METRICS,
        run_name="metrics_scene.json",
    )
    zarr_format: Literal[2, 3] = option(2, "Zarr 2 (GDAL 3.4+ and QGIS open it) or 3")
    cog_values: Literal["ids", "codes"] = option(
        "ids", "COG pixel values: training ids, or the legend's codes"
    )
    chunk: int = option(PREDICT_CHUNK, "output chunk edge in pixels", ge=16)
    tile: int | None = option(
        None,
        "sub-tile edge of the forward pass, 0 for one piece (default: ~9 context margins on a CPU, one piece "
        "on a GPU)",
        ge=0,
    )
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps")
    probabilities: bool = option(False, "also store per-class probabilities")
    date: str | None = option(None, "a cube of several dates: the date to map (default: the labels' date)")
    all_dates: bool = option(False, "a cube of several dates: map every date into one store (time, y, x)")
    overwrite: bool = option(False, "replace existing outputs", pipeline=False)


def _side_files(o: PredictOptions) -> dict[str, Any]:
    """The areas' JSON twin and the COG's QGIS style."""
    out = {"areas_json": as_location(o.areas).with_suffix(".json")} if o.areas else {}
    return out | ({"cog_style": as_location(o.cog).with_suffix(".qml")} if o.cog else {})


def run(o: PredictOptions, ctx: Context) -> dict[str, Any]:
    """Predict, write the store, then read it back for the COG, areas and metrics.

    Every output is checked before any work; the map is computed once (into the Zarr store).
    """
    outputs = STAGE.products(o)
    cube = open_cube(o.cube)
    dates = dates_of(cube)
    stacked = any("/" in str(b) for b in load_checkpoint(o.model)["bands"])  # trained on dates as channels
    temporal: Literal["date", "stack"] = "stack" if stacked else "date"
    if o.all_dates and (not dates or stacked):
        raise InvalidInputError(
            f"--all-dates: needs a cube of several dates and a model of one date's bands; "
            f"{o.cube} has {len(dates) or 1} date(s); {o.model} {'stacks dates' if stacked else 'takes one'}."
        )
    ds = cube_view(cube, date=None if o.all_dates else o.date, temporal=temporal)
    if o.metrics is not None and "labels" not in ds:
        raise InvalidInputError(f"{o.cube}: metrics need labels, and the cube has none.")
    layout = stored_layout(o.patches, (ds.sizes["y"], ds.sizes["x"])) if o.patches is not None else None

    def predict(view: xr.Dataset) -> xr.Dataset:
        return predict_scene(
            view, o.model, chunk=o.chunk, device=o.device, probabilities=o.probabilities, tile=o.tile
        )

    if o.all_dates:
        maps = [predict(cube_view(cube, date=d)) for d in dates]
        pred = xr.concat(maps, dim=pd.Index(np.array(dates, dtype="datetime64[ns]"), name="time")).chunk(
            {"time": 1}
        )
        pred.attrs = maps[0].attrs | {"dates": json.dumps(dates), "labels_date": ds.attrs.get("date", "")}
    else:
        pred = predict(ds)
        pred.attrs["date"] = ds.attrs.get("date", "")
    pred.attrs["cube"] = str(o.cube)
    write_cube(pred, o.out, overwrite=o.overwrite, progress=ctx.progress, zarr_format=o.zarr_format)
    stored = open_prediction(o.out)["classes"]
    legend = legend_of(stored)
    if o.cog is not None:
        write_cog(stored, o.cog, legend=legend, values=o.cog_values, overwrite=o.overwrite)
    if o.uncertainty_cog is not None:
        layers = open_prediction(o.out)
        bands = ["entropy", "margin", "confidence"]
        stack = xr.concat([layers[b] for b in bands], dim=pd.Index(bands, name="band"))
        stack = stack.where(layers["classes"] > 0)  # NaN (the COG's nodata) where nothing was mapped
        stack = stack.rio.write_crs(layers.rio.crs).rio.write_transform(layers.rio.transform())
        write_image_cog(stack, o.uncertainty_cog, overwrite=o.overwrite)
    labels = ds["labels"] if "labels" in ds else None
    if o.areas is not None:
        table = area_table(stored, legend, labels)
        write_atomic(o.areas, lambda tmp: table.to_csv(tmp, index=False, float_format="%.4f"))
        write_text(outputs["areas_json"], table.to_json(orient="records", indent=2))
    if o.metrics is not None and labels is not None:
        report = evaluate_prediction(stored, labels, cube_legend(ds), layout=layout)
        report["source"] = {"prediction": str(o.out), "cube": str(o.cube), "model": str(o.model)}
        write_report(report, o.metrics)
        area = "test" if "test" in report and report["test"]["samples"] else "all"
        rep = report[area]
        label = (
            "scene test area (the held-out blocks; every labelled pixel of the map there)"
            if area == "test"
            else "whole scene (every labelled pixel of the map)"
        )
        ctx.echo(
            f"{label}: overall accuracy {rep['overall_accuracy']}, kappa {rep['kappa']}, mean IoU "
            f"{rep['mean_iou']} on {rep['samples']:,} pixels"
        )
    return outputs


STAGE = Stage(
    "predict",
    "predict a whole cube: prediction.zarr, COG, class areas, metrics",
    PredictOptions,
    run,
    "kerinci-xr predict cube.zarr --model model.pt --out prediction.zarr --cog map.tif --cog-values codes",
    args=("cube",),
    extra_products=_side_files,
)
