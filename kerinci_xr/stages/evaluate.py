"""``evaluate``: accuracy of a model on a patch-store split, or of a prediction against a cube."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .._options import option
from .._outputs import check_output
from ..cube import cube_legend, cube_view, open_cube
from ..errors import InvalidInputError
from ..metrics import evaluate_prediction, format_report, write_report
from ..patches import stored_layout
from ..prediction import open_prediction
from ..training import evaluate_store
from ._base import Context, DaskOptions, Stage

__all__ = ["STAGE", "EvaluateOptions"]


@dataclass(kw_only=True)
class EvaluateOptions(DaskOptions):
    source: str = option(
        help="patch store (with --model) or prediction.zarr (with --cube)",
        positional=True,
        io="in",
        kind="patches",
    )
    model: str | None = option(None, "checkpoint (.pt), to evaluate on a patch store", io="in", kind="model")
    cube: str | None = option(None, "cube whose labels a prediction is compared with", io="in")
    patches: str | None = option(
        None, "with --cube: patch store whose split layout gives per-split metrics", io="in"
    )
    split: Literal["train", "val", "test"] = option("test", "patch-store split to evaluate")
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps")
    out: str = option(help="metrics JSON", io="out", kind="metrics", run_name="metrics.json")
    overwrite: bool = option(False, "replace an existing report", pipeline=False)


def run(o: EvaluateOptions, ctx: Context) -> dict[str, Any]:
    check_output(o.out, overwrite=o.overwrite)
    if o.cube:
        cube = cube_view(open_cube(o.cube))
        if "labels" not in cube:
            raise InvalidInputError(f"{o.cube}: the cube has no labels to compare with.")
        pred = open_prediction(o.source)
        layout = stored_layout(o.patches, (cube.sizes["y"], cube.sizes["x"])) if o.patches else None
        report = evaluate_prediction(pred["classes"], cube["labels"], cube_legend(cube), layout=layout)
        for area, rep in report.items():
            ctx.echo(f"\n== {area} ==\n{format_report(rep)}")
    elif o.model:
        report = evaluate_store(o.source, o.model, split=o.split, device=o.device)
        ctx.echo(format_report(report))
    else:
        raise InvalidInputError("evaluate: pass --model (patch store) or --cube (prediction).")
    return {"metrics": write_report(report, o.out), "report": report}


STAGE = Stage(
    "evaluate",
    "accuracy of a model on a patch store split, or of a prediction on a cube",
    EvaluateOptions,
    run,
    "kerinci-xr evaluate patches.zarr --model model.pt --split test --out metrics.json",
    args=("source",),
)
