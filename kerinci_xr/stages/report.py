"""``report``: one standalone HTML page of a run: maps, accuracy, confusion, areas, training."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .._options import option
from .._products import Kind
from ..errors import InputFileNotFoundError
from ..viz import report_page
from ._base import RECORD, Context, Stage, read_record

__all__ = ["STAGE", "ReportOptions"]


@dataclass(kw_only=True)
class ReportOptions:
    run_dir: str | None = option(
        None, "a pipeline's run folder: its record names every product", positional=True
    )
    cube: str | None = option(None, "cube (.zarr)", io="in", kind=Kind.CUBE)
    prediction: str | None = option(None, "prediction store (.zarr)", io="in", kind=Kind.PREDICTION)
    patches: str | None = option(None, "patch store (.zarr)", io="in", kind=Kind.PATCHES)
    metrics: str | None = option(None, "accuracy on the test patches (JSON)", io="in", kind=Kind.METRICS)
    scene_metrics: str | None = option(
        None, "whole-scene accuracy by split (JSON)", io="in", kind=Kind.SCENE_METRICS
    )
    areas: str | None = option(None, "class areas (CSV)", io="in", kind=Kind.AREAS)
    history: str | None = option(None, "training history (CSV)", io="in", kind=Kind.HISTORY)
    change: str | None = option(None, "a change store (change output)", io="in", kind=Kind.CHANGE)
    change_summary: str | None = option(None, "its summary (JSON)", io="in", kind=Kind.CHANGE_SUMMARY)
    assessment: str | None = option(
        None, "accuracy and areas from a sample (assess JSON)", io="in", kind=Kind.ASSESSMENT
    )
    crossval: str | None = option(
        None, "a cross-validation folder: the models compared on identical folds", io="in", kind=Kind.CROSSVAL
    )
    suggestions: str | None = option(
        None,
        "points to label next (suggest output), shown on the uncertainty map",
        io="in",
        kind=Kind.SUGGESTIONS,
    )
    learning_curves: str | None = option(
        None, "active-learning results (benchmarks/bench_active.py JSON)", io="in", kind=Kind.LEARNING_CURVES
    )
    max_size: int = option(1000, "longest side of each map in pixels", ge=1)
    out: str = option(help="HTML file (works offline)", io="out", kind=Kind.REPORT, run_name="report.html")
    overwrite: bool = option(False, "replace an existing page", pipeline=False)


def _from_run(o: ReportOptions) -> ReportOptions:
    """Fill the inputs not given from the run folder's record (by kind, whatever the names)."""
    if o.run_dir is None:
        return o
    record = read_record(o.run_dir)
    if not record:
        raise InputFileNotFoundError(
            f"{o.run_dir}: expected a run folder with {RECORD} (as `kerinci-xr run` and `demo` write), "
            "found none. Fix: pass --cube (and the other products) instead."
        )
    found = {k: v for st in record.values() for k, v in st.get("products", {}).items()}
    kinds = {s.name: s.meta["kind"] for s in STAGE.specs if s.meta.get("io") == "in"}
    filled: dict[str, Any] = {k: found.get(kind) for k, kind in kinds.items() if getattr(o, k) is None}
    return replace(o, **filled)


def run(o: ReportOptions, ctx: Context) -> dict[str, Any]:
    if o.cube is None:
        raise InputFileNotFoundError("report: no cube. Fix: pass --cube or a run folder that has one.")
    sections = {"whole scene, by split area": o.scene_metrics, "test patches": o.metrics}
    page = report_page(
        o.out,
        cube=o.cube,
        prediction=o.prediction,
        patches=o.patches,
        metrics={title: path for title, path in sections.items() if path is not None},
        areas=o.areas,
        history=o.history,
        assessment=o.assessment,
        change=o.change,
        change_summary=o.change_summary,
        crossval=o.crossval,
        suggestions=o.suggestions,
        learning=o.learning_curves,
        max_size=o.max_size,
    )
    return {"report": page}


STAGE = Stage(
    "report",
    "one HTML page for a run: maps, accuracy, areas, training",
    ReportOptions,
    run,
    "kerinci-xr report runs/demo --out report.html",
    args=("run_dir",),
    complete=_from_run,
)
