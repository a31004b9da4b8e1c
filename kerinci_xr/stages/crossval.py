"""``crossval``: spatial k-fold cross-validation on a cube's labels, of one model or several
compared on identical folds and test samples."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from .._options import option
from .._outputs import MARKER, atomic_output
from .._products import Kind
from ..checkpoint import load_checkpoint
from ..comparison import fold_flags, mean_interval, paired_difference, pooled_report, recommend
from ..cube import cube_legend, cube_view, open_cube
from ..errors import InvalidInputError
from ..metrics import accuracy_report, confusion_matrix
from ..patches import open_patches
from ..pixels import PIXEL_MODELS, score_pixels, window_pixels
from ..sampling import fold_layouts_of
from ..training import TrainConfig, evaluate_store, fit
from ._base import Context, Stage
from .sample import WindowOptions, sample_windows
from .train import PixelOptions, train_pixel_model

__all__ = ["STAGE", "CrossvalOptions"]

METRICS = ("overall_accuracy", "kappa", "macro_f1", "mean_iou")


@dataclass(kw_only=True)
class CrossvalOptions(TrainConfig, WindowOptions, PixelOptions):
    folds: int = option(5, "number of spatial folds (each is the test area once)", ge=2)
    models: tuple[str, ...] = option(
        ("unet",), "the models to compare on the same folds and test samples: unet, lightgbm, rf"
    )
    min_test_samples: int = option(
        10, "a fold whose test area holds fewer samples of a class of the data is flagged", ge=1
    )
    keep_flagged: bool = option(False, "count flagged folds in the means too")
    out: str = option(
        help="output folder: crossval.json, and per fold its patches and model",
        io="out",
        kind=Kind.CROSSVAL,
        run_name="crossval",
    )
    overwrite: bool = option(False, "replace an existing folder written by crossval", pipeline=False)


def summarize(per_fold: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, sample standard deviation and 95 % t-interval of each metric over the folds
    (undefined values left out)."""
    return {m: mean_interval([f[m] for f in per_fold]) for m in METRICS}


def _scored(
    model: str, store: Any, folder: Any, o: CrossvalOptions, config: TrainConfig
) -> dict[str, np.ndarray]:
    """Train ``model`` on a fold's patch store; its predictions at the fold's test pixels."""
    if model == "unet":
        result = fit(store, folder / "model.pt", config=config)
        got: dict[str, np.ndarray] = {}
        evaluate_store(store, result.best, split="test", device=o.device, samples=got)
        return got
    path, _ = train_pixel_model(store, folder / f"{model}.pt", kind=model, options=o, seed=o.seed)
    ds = open_patches(store)
    rows, cols, ref = window_pixels(ds, "test")
    date, temporal = ds.attrs.get("date") or None, ds.attrs.get("temporal", "date")
    view = cube_view(open_cube(ds.attrs["cube"]), date=date, temporal=temporal)
    pred = score_pixels(view, str(path), load_checkpoint(path), rows, cols)
    return {"key": (rows << 32) | cols, "ref": ref, "pred": pred}


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
    unknown = [m for m in o.models if m not in ("unet", *PIXEL_MODELS)]
    if unknown or not o.models:
        raise InvalidInputError(
            f"--models: expected some of unet, lightgbm, rf, found {list(o.models) or 'none'}."
        )
    config = TrainConfig(**{f.name: getattr(o, f.name) for f in fields(TrainConfig)})
    per_fold = []
    samples: dict[str, list[dict[str, np.ndarray]]] = {m: [] for m in o.models}
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
            test_patches = int((draw.manifest["split"] == "test").sum())
            for model in o.models:
                got = _scored(model, store, folder, o, config)
                order = np.argsort(got["key"], kind="stable")
                got = {k: v[order] for k, v in got.items()}
                first = samples[o.models[0]][-1]["key"] if model != o.models[0] else None
                if first is not None and not np.array_equal(first, got["key"]):
                    raise InvalidInputError(
                        f"fold {i}: {model} was scored on other pixels than {o.models[0]}."
                    )
                samples[model].append(got)
                rep = accuracy_report(confusion_matrix(got["ref"], got["pred"], legend.n_classes), legend)
                row = {"fold": i, "model": model} | {m: rep[m] for m in METRICS}
                row |= {"test_samples": rep["samples"], "test_patches": test_patches}
                per_fold.append(row)
                ctx.echo(
                    f"fold {i}/{o.folds} {model}: OA {row['overall_accuracy']}, kappa {row['kappa']}, "
                    f"macro F1 {row['macro_f1']}, mIoU {row['mean_iou']} ({rep['samples']:,} test pixels)"
                )
            first_model = samples[o.models[0]][-1]  # every model's predictions at the fold's test pixels
            table = {"row": first_model["key"] >> 32, "col": first_model["key"] & 0xFFFFFFFF}
            table |= {"reference": first_model["ref"]} | {m: samples[m][-1]["pred"] for m in o.models}
            pd.DataFrame(table).to_parquet(folder / "test_samples.parquet", index=False)
        present = sorted({int(k) for m in samples[o.models[0]] for k in np.unique(m["ref"])})
        for row in per_fold:
            ref = samples[str(row["model"])][int(str(row["fold"])) - 1]["ref"]
            row["test_classes"] = ",".join(str(int(k)) for k in np.unique(ref))
            row["flags"] = "; ".join(fold_flags(ref, present, o.min_test_samples))
        report = _compare(per_fold, samples, legend, o)
        report |= {"sample_unit": "pixel (each test pixel once, the same pixels for every model)"}
        report |= {"block": block, "seed": o.seed, "min_test_samples": o.min_test_samples}
        (tmp / "crossval.json").write_text(json.dumps(report, indent=2) + "\n")
        pd.DataFrame(per_fold).to_csv(tmp / "crossval.csv", index=False)
    for model in o.models:
        summary = report["models"][model]["summary"]
        ctx.echo(
            f"{model}: mean over {summary['overall_accuracy']['folds']} fold(s) (95 % interval): "
            + ", ".join(f"{m} {summary[m]['mean']} {summary[m]['ci95']}" for m in METRICS)
            + f"; pooled OA {report['models'][model]['pooled']['overall_accuracy']}"
        )
    if len(o.models) > 1:
        ctx.echo(f"use {report['recommendation']['model']}: {report['recommendation']['why']}")
    return {"crossval": o.out, "report": report}


def _compare(
    per_fold: list[dict[str, Any]],
    samples: dict[str, list[dict[str, np.ndarray]]],
    legend: Any,
    o: CrossvalOptions,
) -> dict[str, Any]:
    """Per model: fold means with intervals (flagged folds left out unless asked) and the pooled
    figures; every pair's paired difference; the model to use."""
    models: dict[str, Any] = {}
    for model in o.models:
        rows = [r for r in per_fold if r["model"] == model]
        kept = [r for r in rows if o.keep_flagged or not r["flags"]]
        pooled = pooled_report(
            [s["ref"] for s in samples[model]], [s["pred"] for s in samples[model]], legend
        )
        models[model] = {
            "summary": summarize(kept),
            "folds_flagged": [r["fold"] for r in rows if r["flags"]],
            "pooled": {m: pooled[m] for m in (*METRICS, "samples", "confusion_matrix")},
        }
    differences = []
    for a in o.models:
        for b in o.models:
            if (a == "unet" and b != "unet") or ("unet" not in (a, b) and a < b):
                d = paired_difference(
                    [s["ref"] for s in samples[a]],
                    [s["pred"] for s in samples[a]],
                    [s["pred"] for s in samples[b]],
                    seed=o.seed,
                )
                differences.append({"a": a, "b": b, "metric": "overall_accuracy"} | d)
    pooled = {m: models[m]["pooled"] for m in o.models}
    out = {"folds": per_fold, "models": models, "differences": differences}
    out["recommendation"] = recommend(pooled, differences)
    out["summary"] = models[o.models[0]]["summary"]  # (the first model's, as before several models)
    return out


STAGE = Stage(
    "crossval",
    "spatial k-fold cross-validation of the U-Net and per-pixel models on identical folds",
    CrossvalOptions,
    run,
    "kerinci-xr crossval cube.zarr --folds 5 --patch 32 --epochs 10 --models unet,lightgbm,rf --out crossval",
    args=("cube",),
)
