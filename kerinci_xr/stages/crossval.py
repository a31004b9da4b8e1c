"""``crossval``: spatial k-fold cross-validation on a cube's labels, of one model or several
compared on identical folds and test samples."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._lazy import lazy_module
from .._options import option
from .._outputs import MARKER, atomic_output
from .._products import Kind
from ..comparison import fold_flags, mean_interval, paired_difference, pooled_report, recommend
from ..cube import cube_legend, cube_view, open_cube
from ..distributed import DistributedError, Orders, setup, world
from ..errors import InvalidInputError, NoWindowError
from ..metrics import accuracy_report, confusion_matrix
from ..patches import open_patches
from ..pixels import PIXEL_MODELS, labelled_pixels, window_pixels
from ..prediction import classes_at
from ..sampling import SPARSE_SHARE, feature_fold_layouts, fold_layouts_of
from ..settings import TrainConfig
from ._base import Context, Stage
from .sample import WindowOptions, sample_windows
from .train import PixelOptions, train_pixel_model

#: The modules that import PyTorch, loaded when a U-Net trains (not to declare the options).
training = lazy_module("kerinci_xr.training")
model_lib = lazy_module("kerinci_xr.model")

__all__ = ["STAGE", "CrossvalOptions"]

METRICS = ("overall_accuracy", "kappa", "macro_f1", "mean_iou")


@dataclass(kw_only=True)
class CrossvalOptions(TrainConfig, WindowOptions, PixelOptions):
    folds: int = option(5, "number of spatial folds (each is the test area once)", ge=2)
    models: tuple[str, ...] = option(
        ("unet",), "the models to compare on the same folds and test samples: unet, lightgbm, rf"
    )
    patch: int | None = option(  # type: ignore[assignment]
        None,
        "window edge in pixels (default: 32 for sparse labels, 128 for wall-to-wall, halved down to 16 "
        "until the scene holds 3 blocks per fold)",
        ge=8,
    )
    group_by: Literal["block", "feature"] = option(
        "block",
        "test areas: spatial blocks, or whole reference features (a polygon in one fold only; "
        "needs vector labels)",
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
    return {m: mean_interval([f.get(m) for f in per_fold]) for m in METRICS}


@dataclass
class _Fold:
    """One fold, sampled and checked before any model trains: its patch store and its test
    pixels (every labelled, valid pixel of its test area, row-major)."""

    number: int
    folder: Any
    store: Any
    test_patches: int
    rows: np.ndarray
    cols: np.ndarray
    ref: np.ndarray
    trained: set[int]
    view: Any = None  # the cube as its models train on it (test features' labels hidden)
    skip: str = ""  # why the fold is not trained (nothing to test, or nothing to train on)


def _windows(ds: Any, o: CrossvalOptions, *, labelled: int) -> tuple[CrossvalOptions, str]:
    """The options with the window and block edges decided: as given, or an unset patch 32
    pixels for sparse labels (128 for wall-to-wall), halved down to 16 until the scene holds 3
    blocks per fold; an unset block 4 x patch."""
    h, w = ds.sizes["y"], ds.sizes["x"]
    if o.patch is not None:
        block = 4 * o.patch if o.block is None else o.block
        return replace(o, block=block), "as given" if o.block is not None else "4 x the patch"
    valid = int(ds["valid"].sum().compute())
    sparse = labelled < SPARSE_SHARE * valid
    patch = 32 if sparse else 128
    while o.block is None and patch > 16 and -(-h // (4 * patch)) * -(-w // (4 * patch)) < 3 * o.folds:
        patch //= 2
    kind = "sparse" if sparse else "wall-to-wall"
    why = f"{kind} labels ({labelled:,} of {valid:,} valid pixels), a {h} x {w} scene"
    return replace(o, patch=patch, block=4 * patch if o.block is None else o.block), why


def _split_features(fid: np.ndarray, fold: np.ndarray) -> int:
    """How many reference features have pixels in more than one fold's test area."""
    pairs = pd.DataFrame({"fid": fid, "fold": fold}).drop_duplicates()
    return int((pairs.groupby("fid").size() > 1).sum())


def _plan(
    ds: Any,
    layouts: list,
    o: CrossvalOptions,
    tmp: Any,
    ctx: Context,
    labelled: tuple,
    groups: np.ndarray | None,
) -> list[_Fold]:
    """Sample every fold's windows and find its test pixels; a fold that cannot train or test
    stops the run here, before the first model trains. With ``groups`` (the fold of every
    labelled pixel, by reference feature) a fold's test pixels are its features' pixels, and
    their labels are hidden from its training and validation sample."""
    rows, cols, ref, fid = labelled
    folds = []
    for i, layout in enumerate(layouts, start=1):
        folder = tmp / f"fold{i}"
        folder.mkdir()
        if groups is None:
            test, view = layout.split_of(rows, cols) == 2, ds
        else:
            test = groups == i - 1
            hidden = np.unique(fid[test])
            view = ds.assign(labels=ds["labels"].where(~ds["reference_id"].isin(hidden), 0))
        try:
            draw, store = sample_windows(
                view,
                o,
                folder / "patches.zarr",
                seed=o.seed,
                layout=layout,
                split={"fold": i, "folds": o.folds, "by": "labels", "group_by": o.group_by},
                progress=ctx.progress,
            )
            splits = draw.manifest["split"]
        except NoWindowError:  # no window fits in any split of this fold: flagged below
            store, splits = None, pd.Series([], dtype=object)
        trainable = bool((splits == "train").any())
        trained = set()
        if trainable:
            trained = {int(k) for k in np.unique(window_pixels(open_patches(store), "train")[2])}
        fold = _Fold(
            i, folder, store, int((splits == "test").sum()), rows[test], cols[test], ref[test], trained, view
        )
        if not test.any():
            fold.skip = "no labelled pixel in the test area: not trained"
        elif not trainable:
            fold.skip = "no training window fits in the training area: not trained"
        folds.append(fold)
    if all(f.skip for f in folds):
        raise InvalidInputError(
            f"no fold of {o.folds} can be trained and tested ({folds[0].skip}); nothing was trained. "
            "Fix: fewer --folds, a larger --block or a smaller --patch."
        )
    return folds


def _scored(
    model: str,
    fold: _Fold,
    view: Any,
    o: CrossvalOptions,
    config: TrainConfig,
    orders: Orders,
    progress: bool = False,
) -> np.ndarray:
    """Train ``model`` on a fold's sample; its map's classes at the fold's test pixels. Under
    torchrun the other processes are told to join the U-Net's training."""
    if model == "unet":
        orders.send(("fit", str(fold.store), str(fold.folder / "model.pt")))
        path = training.fit(fold.store, fold.folder / "model.pt", config=config, progress=progress).best
    else:
        path, _ = train_pixel_model(
            fold.store,
            fold.folder / f"{model}.pt",
            kind=model,
            options=o,
            seed=o.seed,
            cube=fold.view,
            progress=progress,
        )
    return classes_at(view, path, fold.rows, fold.cols, device=o.device)


def _follow(orders: Orders, config: TrainConfig) -> dict[str, Any]:
    """A process other than rank 0 under torchrun: join each U-Net training rank 0 starts."""
    while True:
        order = orders.receive()
        if order[0] == "fit":
            training.fit(order[1], order[2], config=config)
        elif order[0] == "stop":
            return {}
        else:  # rank 0 failed: its own message says why
            raise DistributedError(f"rank {world().rank}: rank 0 stopped the cross-validation ({order[1]}).")


def run(o: CrossvalOptions, ctx: Context) -> dict[str, Any]:
    w = world()
    config = TrainConfig(**{f.name: getattr(o, f.name) for f in fields(TrainConfig)})
    setup(w, model_lib.pick_device(o.device).type, o.dist_timeout)
    orders = Orders(w, 12 * o.dist_timeout)
    if not w.main:
        return _follow(orders, config)
    try:
        result = _run(o, ctx, config, orders)
    except BaseException as exc:
        orders.send(("abort", type(exc).__name__))
        raise
    orders.send(("stop",))
    return result


def _run(o: CrossvalOptions, ctx: Context, config: TrainConfig, orders: Orders) -> dict[str, Any]:
    ds = cube_view(open_cube(o.cube), date=o.date, temporal=o.temporal)
    if "labels" not in ds:
        raise InvalidInputError(f"{o.cube}: the cube has no labels. Fix: prepare it with --labels.")
    legend = cube_legend(ds)
    unknown = [m for m in o.models if m not in ("unet", *PIXEL_MODELS)]
    if unknown or not o.models:
        raise InvalidInputError(
            f"--models: expected some of unet, lightgbm, rf, found {list(o.models) or 'none'}."
        )
    rows, cols, ref, ok = labelled_pixels(ds)
    o, why = _windows(ds, o, labelled=int(ok.sum()))
    assert o.block is not None and o.patch is not None  # (decided by _windows)
    block, patch = o.block, o.patch
    ctx.echo(f"folds of {block}-pixel blocks, {patch}-pixel windows ({why})")
    if o.group_by == "feature" and "reference_id" not in ds:
        raise InvalidInputError(
            f"{o.cube}: --group-by feature needs the reference features, and this cube's labels are a "
            "raster. Fix: prepare it with --labels from a vector file, or use --group-by block."
        )
    present = sorted(int(k) for k in np.unique(ref[ok]))
    fid = ds["reference_id"].data.vindex[rows, cols].compute() if "reference_id" in ds else None
    groups = None
    if o.group_by == "feature":  # folds of whole features, by their home blocks
        assert fid is not None  # (checked above)
        layouts, groups = feature_fold_layouts(
            fid[ok],
            ref[ok],
            rows[ok],
            cols[ok],
            (ds.sizes["y"], ds.sizes["x"]),
            block=block,
            folds=o.folds,
            n_classes=legend.n_classes,
            seed=o.seed,
        )
    else:
        layouts = fold_layouts_of(
            ds,
            folds=o.folds,
            block=block,
            patch=patch,
            buffer=o.buffer,
            seed=o.seed,
            n_classes=legend.n_classes,
        )
    if fid is not None:  # features cut by the test areas (0 when grouped by feature)
        in_test = np.zeros(int(ok.sum()), dtype=np.int64)
        for i, layout in enumerate(layouts):
            in_test[layout.split_of(rows[ok], cols[ok]) == 2] = i
        features_split = _split_features(fid[ok], in_test if groups is None else groups)
    per_fold = []
    samples: dict[str, list[dict[str, np.ndarray]]] = {m: [] for m in o.models}
    with atomic_output(o.out, overwrite=o.overwrite) as tmp:
        tmp.mkdir()
        (tmp / MARKER).write_text(json.dumps({"title": "kerinci_xr cross-validation", "cube": str(o.cube)}))
        labelled = (rows[ok], cols[ok], ref[ok], None if fid is None else fid[ok])
        folds = _plan(ds, layouts, o, tmp, ctx, labelled, groups)
        for fold in folds:
            if fold.skip:
                per_fold += [
                    {"fold": fold.number, "model": m, "test_samples": 0, "flags": fold.skip} for m in o.models
                ]
                ctx.echo(f"fold {fold.number}/{o.folds}: {fold.skip}")
                continue
            flags = fold_flags(fold.ref, present, o.min_test_samples)
            flags += [
                f"class {k} tested, not in the training windows"
                for k in np.unique(fold.ref)
                if k not in fold.trained
            ]
            table = {"row": fold.rows, "col": fold.cols, "reference": fold.ref}
            for model in o.models:
                t0 = time.perf_counter()
                ctx.echo(
                    f"fold {fold.number}/{o.folds} {model}: training, then scoring "
                    f"{fold.ref.size:,} test pixels"
                )
                pred = _scored(model, fold, ds, o, config, orders, ctx.progress)
                seconds = time.perf_counter() - t0
                samples[model].append({"ref": fold.ref, "pred": pred})
                table[model] = pred
                rep = accuracy_report(confusion_matrix(fold.ref, pred, legend.n_classes), legend)
                row = {"fold": fold.number, "model": model} | {m: rep[m] for m in METRICS}
                row |= {"test_samples": rep["samples"], "test_patches": fold.test_patches}
                row |= {"test_classes": ",".join(str(int(k)) for k in np.unique(fold.ref))}
                row |= {"flags": "; ".join(flags), "train_s": round(seconds, 2)}  # training and scoring
                per_fold.append(row)
                ctx.echo(
                    f"fold {fold.number}/{o.folds} {model}: OA {row['overall_accuracy']}, "
                    f"kappa {row['kappa']}, macro F1 {row['macro_f1']}, mIoU {row['mean_iou']} "
                    f"({rep['samples']:,} test pixels)"
                )
            pd.DataFrame(table).to_parquet(fold.folder / "test_samples.parquet", index=False)
        report = _compare(per_fold, samples, legend, o)
        report |= {
            "sample_unit": "pixel (every labelled pixel once, in its fold's test area; "
            "the same for every model)"
        }
        report |= {"labelled_pixels": int(ref.size), "on_nodata": int((~ok).sum())}
        scored = sum(f.ref.size for f in folds if not f.skip)
        report |= {"scored": scored, "scored_share": round(scored / ref.size, 4) if ref.size else None}
        report |= {"block": block, "seed": o.seed, "min_test_samples": o.min_test_samples}
        report |= {"group_by": o.group_by, "patch": o.patch}
        report["model_selection"] = (
            "U-Net: the last epoch (a fixed number of epochs)"
            if o.select == "last"
            else "U-Net: the epoch of best mean IoU on the validation fold"
        )
        if fid is not None:
            report |= {"features": int(np.unique(fid).size), "features_split": features_split}
        (tmp / "crossval.json").write_text(json.dumps(report, indent=2) + "\n")
        pd.DataFrame(per_fold).to_csv(tmp / "crossval.csv", index=False)
    ctx.echo(
        f"{report['scored']:,} of {report['labelled_pixels']:,} labelled pixels scored, each once"
        + (f"; {report['on_nodata']:,} lie on image nodata and were left out" if report["on_nodata"] else "")
        + (
            "; the rest lie in folds that were not trained (see their flags)"
            if any(f.skip for f in folds)
            else ""
        )
    )
    for model in o.models:
        summary = report["models"][model]["summary"]
        ctx.echo(
            f"{model}: mean over {summary['overall_accuracy']['folds']} fold(s) (95 % interval): "
            + ", ".join(f"{m} {summary[m]['mean']} {summary[m]['ci95']}" for m in METRICS)
            + f"; pooled OA {report['models'][model]['pooled']['overall_accuracy']} "
            f"{report['models'][model]['pooled']['ci95'].get('overall_accuracy')}"
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
            [s["ref"] for s in samples[model]], [s["pred"] for s in samples[model]], legend, seed=o.seed
        )
        models[model] = {
            "summary": summarize(kept),
            "folds_flagged": [r["fold"] for r in rows if r["flags"]],
            "pooled": {m: pooled[m] for m in (*METRICS, "ci95", "samples", "confusion_matrix")},
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
    distributed=True,
)
