"""``evaluate``: accuracy of a model on a patch-store split, or of a map against reference data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .._lazy import lazy_module
from .._options import option
from .._products import Kind
from ..calibration import log_probabilities
from ..checkpoint import check_compatible, load_checkpoint
from ..cube import cube_legend, cube_view, open_cube
from ..errors import InvalidInputError
from ..legend import legend_of
from ..metrics import (
    accuracy_report,
    confusion_matrix,
    evaluate_features,
    evaluate_prediction,
    feature_table,
    format_calibration,
    format_report,
    write_report,
)
from ..patches import open_patches, stored_layout
from ..pixels import pixel_probabilities, window_pixels
from ..prediction import open_class_map, open_prediction
from ..vector import rasterize_reference, read_reference
from ._base import Context, DaskOptions, Stage

#: PyTorch's evaluation of a U-Net, loaded when one is evaluated (not to declare the options).
training = lazy_module("kerinci_xr.training")

__all__ = ["STAGE", "EvaluateOptions"]

#: Per-feature results are kept in the JSON report up to this many features.
MAX_FEATURE_ROWS = 100_000


@dataclass(kw_only=True)
class EvaluateOptions(DaskOptions):
    source: str = option(
        help="patch store (with --model), or a map: prediction.zarr or its COG (with --cube or --reference)",
        positional=True,
        io="in",
        kind=Kind.PATCHES,
    )
    model: str | None = option(
        None, "checkpoint (.pt), to evaluate on a patch store", io="in", kind=Kind.MODEL
    )
    cube: str | None = option(
        None, "cube whose labels (or reference features) a map is compared with", io="in"
    )
    reference: str | None = option(
        None,
        "reference points/polygons (GeoJSON, GeoPackage, Shapefile, GeoParquet) to compare a map with",
        io="in",
    )
    label_field: str = option("lc", "with --reference: the field with the codes (or class names)")
    polygon_rule: Literal["majority", "pixels"] = option(
        "majority", "a polygon counts once with its majority class, or every one of its pixels counts"
    )
    patches: str | None = option(
        None, "with --cube or --reference: patch store whose split layout gives per-split metrics", io="in"
    )
    split: Literal["train", "val", "test"] = option("test", "patch-store split to evaluate")
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps")
    out: str = option(help="metrics JSON", io="out", kind=Kind.METRICS, run_name="metrics.json")
    overwrite: bool = option(False, "replace an existing report", pipeline=False)


def _echo_reports(report: dict[str, Any], ctx: Context) -> None:
    for area, rep in report.items():
        ctx.echo(f"\n== {area} ==\n{format_report(rep)}")
        left = {k: rep.get("features", {}).get(k, 0) for k in ("on_nodata", "without_pixels")}
        if any(left.values()):
            ctx.echo(
                f"not counted: {left['on_nodata']:,} feature(s) where the map has no class (image nodata), "
                f"{left['without_pixels']:,} polygon(s) with no pixel left"
            )


def _evaluate_pixels(o: EvaluateOptions) -> dict[str, Any]:
    """A per-pixel model scored on the pixels the U-Net is scored on: the labelled, valid pixels
    of the split's patches, each once (predicted from the whole scene's features)."""
    store, model = open_patches(o.source), str(o.model)
    ckpt = load_checkpoint(model)
    legend = legend_of(store)
    check_compatible(ckpt, bands=[str(b) for b in store["band"].values], legend=legend, source=model)
    date, temporal = store.attrs.get("date") or None, store.attrs.get("temporal", "date")
    view = cube_view(open_cube(store.attrs["cube"]), date=date, temporal=temporal)
    rows, cols, ref = window_pixels(store, o.split)
    p, ok = pixel_probabilities(view, model, ckpt, rows, cols)
    ids = np.asarray(ckpt["classes"])
    pred = np.where(ok, ids[p.argmax(axis=1)], 0).astype(np.uint8)
    report = accuracy_report(confusion_matrix(ref, pred, legend.n_classes), legend)
    if ok.any():
        report["calibration"] = training.held_out_calibration(
            ckpt, log_probabilities(p[ok]), ref[ok], o.split, ids
        )
    report["source"] = {"patches": str(o.source), "split": o.split, "model": model}
    return report


def run(o: EvaluateOptions, ctx: Context) -> dict[str, Any]:
    if o.reference:
        classes, legend = open_class_map(o.source)
        shape = (classes.sizes["y"], classes.sizes["x"])
        feats = read_reference(
            o.reference,
            o.label_field,
            crs=classes.rio.crs,
            transform=classes.rio.transform(),
            shape=shape,
            legend=legend,
        )
        ids = None
        if (feats.table["kind"] != 0).any():
            chunks = (
                classes.chunk({"y": 1024, "x": 1024}).data.chunks
                if classes.chunks is None
                else classes.chunks
            )
            ids = classes.copy(data=rasterize_reference(feats, (chunks[0], chunks[1]))[1])
        layout = stored_layout(o.patches, shape) if o.patches else None
        report = evaluate_features(
            classes, feats.table, legend, reference_id=ids, rule=o.polygon_rule, layout=layout
        )
        report["all"]["reference"] = feats.report | {"file": str(o.reference)}
        _echo_reports(report, ctx)
    elif o.cube:
        cube = cube_view(open_cube(o.cube))
        if "labels" not in cube:
            raise InvalidInputError(f"{o.cube}: the cube has no labels to compare with.")
        pred = open_prediction(o.source)
        layout = stored_layout(o.patches, (cube.sizes["y"], cube.sizes["x"])) if o.patches else None
        if "reference_id" in cube:  # vector reference data: each feature once
            report = evaluate_features(
                pred["classes"],
                feature_table(cube),
                cube_legend(cube),
                reference_id=cube["reference_id"],
                rule=o.polygon_rule,
                layout=layout,
            )
        else:
            report = evaluate_prediction(pred["classes"], cube["labels"], cube_legend(cube), layout=layout)
        _echo_reports(report, ctx)
    elif o.model:
        if load_checkpoint(o.model)["model_kind"] == "unet":
            report = training.evaluate_store(o.source, o.model, split=o.split, device=o.device)
        else:
            report = _evaluate_pixels(o)
        ctx.echo(f"patch {o.split} split (the model on its held-out windows, each labelled pixel once):")
        ctx.echo(format_report(report))
        if "calibration" in report:
            ctx.echo(format_calibration(report["calibration"]))
    else:
        raise InvalidInputError(
            "evaluate: pass --model (a patch store), --cube or --reference (a map). Fix: e.g. "
            "kerinci-xr evaluate prediction.zarr --reference points.gpkg --label-field lc --out metrics.json"
        )
    rows = report.get("all", {}).get("feature_results")
    if rows is not None and len(rows["feature"]) > MAX_FEATURE_ROWS:
        report["all"].pop("feature_results")
    return {"metrics": write_report(report, o.out), "report": report}


STAGE = Stage(
    "evaluate",
    "accuracy of a model on a patch store split, or of a map against the cube or a reference file",
    EvaluateOptions,
    run,
    "kerinci-xr evaluate prediction.zarr --reference points.gpkg --label-field lc --out metrics.json",
    args=("source",),
)
