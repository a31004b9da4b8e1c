"""``crossval``: spatial k-fold cross-validation of the U-Net on a cube's labels."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from .._options import option
from .._outputs import MARKER, atomic_output
from .._products import Kind
from ..cube import cube_legend, cube_view, open_cube
from ..errors import InvalidInputError
from ..sampling import fold_layouts_of
from ..training import TrainConfig, evaluate_store, fit
from ._base import Context, Stage
from .sample import WindowOptions, sample_windows

__all__ = ["STAGE", "CrossvalOptions"]

METRICS = ("overall_accuracy", "kappa", "macro_f1", "mean_iou")


@dataclass(kw_only=True)
class CrossvalOptions(TrainConfig, WindowOptions):
    folds: int = option(5, "number of spatial folds (each is the test area once)", ge=2)
    out: str = option(
        help="output folder: crossval.json, and per fold its patches and model",
        io="out",
        kind=Kind.CROSSVAL,
        run_name="crossval",
    )
    overwrite: bool = option(False, "replace an existing folder written by crossval", pipeline=False)


def summarize(per_fold: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation of each metric over the folds (undefined folds skipped)."""
    out: dict[str, Any] = {}
    for m in METRICS:
        v = np.array([f[m] for f in per_fold if f[m] is not None], dtype=float)
        out[m] = {
            "mean": round(float(v.mean()), 6) if v.size else None,
            "std": round(float(v.std(ddof=1)), 6) if v.size > 1 else None,
            "folds": int(v.size),
        }
    return out


def run(o: CrossvalOptions, ctx: Context) -> dict[str, Any]:
    ds = cube_view(open_cube(o.cube), date=o.date, temporal=o.temporal)
    if "labels" not in ds:
        raise InvalidInputError(f"{o.cube}: the cube has no labels. Fix: prepare it with --labels.")
    legend = cube_legend(ds)
    block = 4 * o.patch if o.block is None else o.block
    layouts = fold_layouts_of(
        ds,
        folds=o.folds,
        block=block,
        patch=o.patch,
        buffer=o.buffer,
        seed=o.seed,
        n_classes=legend.n_classes,
    )
    config = TrainConfig(**{f.name: getattr(o, f.name) for f in fields(TrainConfig)})
    per_fold = []
    with atomic_output(o.out, overwrite=o.overwrite) as tmp:
        tmp.mkdir()
        (tmp / MARKER).write_text(json.dumps({"title": "kerinci_xr cross-validation", "cube": str(o.cube)}))
        for i, layout in enumerate(layouts, start=1):
            folder = tmp / f"fold{i}"
            folder.mkdir()
            draw, store = sample_windows(
                ds,
                o,
                folder / "patches.zarr",
                seed=o.seed,
                layout=layout,
                split={"fold": i, "folds": o.folds, "by": "labels"},
                progress=ctx.progress,
            )
            if not (draw.manifest["split"] == "test").any():
                raise InvalidInputError(
                    f"fold {i}: no test patch fits in its area. Fix: fewer --folds, a larger --block or a "
                    "smaller --patch."
                )
            result = fit(store, folder / "model.pt", config=config)
            rep = evaluate_store(store, result.best, split="test", device=o.device)
            row = (
                {"fold": i}
                | {m: rep[m] for m in METRICS}
                | {
                    "test_samples": rep["samples"],
                    "test_patches": int((draw.manifest["split"] == "test").sum()),
                }
            )
            per_fold.append(row)
            ctx.echo(
                f"fold {i}/{o.folds}: OA {row['overall_accuracy']}, kappa {row['kappa']}, macro F1 "
                f"{row['macro_f1']}, mIoU {row['mean_iou']} ({row['test_samples']:,} test pixels)"
            )
        summary = summarize(per_fold)
        report = {
            "folds": per_fold,
            "summary": summary,
            "sample_unit": "pixel (each test pixel once)",
            "block": block,
            "seed": o.seed,
        }
        (tmp / "crossval.json").write_text(json.dumps(report, indent=2) + "\n")
        pd.DataFrame(per_fold).to_csv(tmp / "crossval.csv", index=False)
    ctx.echo(
        "mean +- std over folds: "
        + ", ".join(f"{m} {summary[m]['mean']} +- {summary[m]['std']}" for m in METRICS)
    )
    return {"crossval": o.out, "report": report}


STAGE = Stage(
    "crossval",
    "spatial k-fold cross-validation: train and test the U-Net once per fold",
    CrossvalOptions,
    run,
    "kerinci-xr crossval cube.zarr --folds 5 --patch 32 --epochs 10 --out crossval",
    args=("cube",),
)
