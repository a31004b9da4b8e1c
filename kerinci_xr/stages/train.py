"""``train``: the U-Net on a patch store, validated each epoch; best and last checkpoints, history."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._lazy import lazy_module
from .._options import option
from .._outputs import write_atomic, write_text
from .._products import Kind
from ..calibration import calibration_record, columns_of, log_probabilities
from ..checkpoint import booster_digest, save_checkpoint
from ..cube import cube_view, open_cube
from ..distributed import world
from ..errors import InvalidInputError
from ..legend import legend_of
from ..patches import open_patches, stored_layout
from ..pixels import FeatureRecipe, class_probabilities, fit_pixels, pixel_sample
from ..settings import TrainConfig, history_paths
from ._base import Context, Stage

#: PyTorch's training loop, loaded when a U-Net trains (not to declare the options).
training = lazy_module("kerinci_xr.training")

__all__ = ["STAGE", "PixelOptions", "TrainOptions", "train_pixel_model"]


@dataclass(kw_only=True)
class PixelOptions:
    """Options of the per-pixel models (``train --model lightgbm|rf``, ``crossval --models``)."""

    indices: tuple[str, ...] = option((), "per-pixel models: spectral indices as features (ndvi,ndwi,nbr)")
    windows: tuple[int, ...] = option(
        (), "per-pixel models: mean and std of every band over these neighbourhoods (3,5)", ge=3
    )
    rounds: int = option(300, "per-pixel models: boosting rounds (trees per class; forest size)", ge=1)
    max_pixels: int = option(
        20_000, "per-pixel models: at most this many training pixels per class (a seeded choice)", ge=1
    )


@dataclass(kw_only=True)
class TrainOptions(TrainConfig, PixelOptions):
    patches: str = option(
        help="patch store (kerinci-xr sample output)", positional=True, io="in", kind=Kind.PATCHES
    )
    out: str = option(
        help="best checkpoint (.pt); <stem>.last.pt and <stem>.history.csv beside it",
        io="out",
        kind=Kind.MODEL,
        run_name="model.pt",
    )
    model: Literal["unet", "lightgbm", "rf"] = option(
        "unet", "the model: the U-Net, or a per-pixel LightGBM (gradient boosting) or random forest"
    )
    resume: bool = option(False, "continue from <stem>.last.pt")
    until_epoch: int | None = option(None, "stop after this epoch (continue later with --resume)", ge=1)
    overwrite: bool = option(False, "replace an existing checkpoint", pipeline=False)


def _history(o: TrainOptions) -> dict[str, Any]:
    last, csv, js = history_paths(o.out)
    return ({"model_last": last} if o.model == "unet" else {}) | {"history": csv, "history_json": js}


def run(o: TrainOptions, ctx: Context) -> dict[str, Any]:
    if o.model != "unet":
        return _train_pixels(o, ctx)
    if o.indices or o.windows:
        raise InvalidInputError(
            "--indices and --windows are features of per-pixel models (--model lightgbm, rf)."
        )
    config = TrainConfig(**{f.name: getattr(o, f.name) for f in fields(TrainConfig)})
    result = training.fit(
        o.patches,
        o.out,
        config=config,
        resume=o.resume,
        overwrite=o.overwrite,
        progress=ctx.progress,
        until_epoch=o.until_epoch,
    )
    used = result.config or config
    if result.calibration:
        cal = result.calibration
        ctx.echo(_calibration_line(cal["temperature"], cal["before"]["ece"], cal["after"]["ece"]))
    validated = any(r.get("val_mean_iou") is not None for r in result.history)
    best = (
        f"best validation mIoU {result.best_miou:.4f}"
        if validated
        else "no validation pixels: the epoch of lowest training loss is kept"
    )
    ctx.echo(
        f"preset {used.preset}: depth {used.depth}, base {used.base}, lr {used.lr}, class weights "
        f"{used.class_weights}, patience {used.patience}; {best}"
    )
    return {"model": result.best, "model_last": result.last, "history": result.history_csv, "result": result}


def _calibration_line(temperature: float, before: float, after: float) -> str:
    return (
        f"calibration: temperature {temperature:.3f} fitted on the validation pixels (expected calibration "
        f"error {before:.4f} -> {after:.4f}); predict applies it"
    )


def _train_pixels(o: TrainOptions, ctx: Context) -> dict[str, Any]:
    if world().active:
        raise InvalidInputError(
            f"--model {o.model}: a per-pixel model trains in one process (LightGBM uses every core). "
            "Fix: run kerinci-xr train without torchrun."
        )
    if o.resume or o.until_epoch is not None:
        raise InvalidInputError(
            f"--resume and --until-epoch are for the U-Net; a {o.model} model trains in one go."
        )
    model, info = train_pixel_model(
        o.patches, o.out, kind=o.model, options=o, seed=o.seed, calibrate=o.calibrate, progress=ctx.progress
    )  # type: ignore[arg-type]
    _, csv, js = history_paths(o.out)
    val_oa = (
        f", validation OA {info['val_oa']:.3f} on {info['val_pixels']:,} pixels" if "val_oa" in info else ""
    )
    ctx.echo(f"{o.model}: {info['train_pixels']:,} training pixels, {info['features']} features{val_oa}")
    if "temperature" in info:
        ctx.echo(_calibration_line(info["temperature"], info["val_ece"], info["val_ece_calibrated"]))
    return {"model": model, "history": csv, "history_json": js}


def train_pixel_model(
    patches: str | os.PathLike,
    out: str | os.PathLike,
    *,
    kind: str,
    options: PixelOptions,
    seed: int,
    cube: Any = None,
    calibrate: bool = True,
    progress: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """A per-pixel model on the labelled pixels of a patch store's training area (its cube and
    split layout), validated on the validation area's pixels; writes the checkpoint and its
    history (CSV and JSON) beside it. Returns the checkpoint's location and what was measured.
    ``cube``: the view of the store's cube to take pixels from (default: the cube it names);
    ``calibrate``: fit a temperature on the validation pixels (:mod:`kerinci_xr.calibration`)."""
    store = open_patches(patches)
    if cube is None:
        date, temporal = store.attrs.get("date") or None, store.attrs.get("temporal", "date")
        cube = cube_view(open_cube(store.attrs["cube"]), date=date, temporal=temporal)
    layout = stored_layout(store, (cube.sizes["y"], cube.sizes["x"]))
    bands = [str(b) for b in store["band"].values]
    roles = {r: b for r, b in json.loads(store.attrs.get("band_roles") or "{}").items() if b in bands}
    recipe = FeatureRecipe(tuple(bands), roles, tuple(options.indices), tuple(options.windows))
    train = pixel_sample(cube, layout, recipe, split="train", max_per_class=options.max_pixels, seed=seed)
    val = pixel_sample(cube, layout, recipe, split="val", max_per_class=options.max_pixels, seed=seed)
    text, classes, info = fit_pixels(
        train,
        kind=kind,  # type: ignore[arg-type]
        rounds=options.rounds,
        seed=seed,
        val=val,
        progress=progress,
    )
    info |= {"model": kind, "features": len(recipe.names())}
    payload = {
        "model_kind": kind,
        "booster": text,
        "booster_sha256": booster_digest(text),
        "classes": classes,
        "features": recipe.to_dict(),
        "bands": bands,
        "legend": legend_of(store).to_dict(),
        "history": [info],
        "sample": {"patches": str(patches), "cube": str(store.attrs["cube"]), "seed": seed},
    }
    if calibrate and val.y.size:
        import lightgbm as lgb

        p = class_probabilities(lgb.Booster(model_str=text), val.x)
        record = calibration_record(log_probabilities(p), columns_of(val.y, np.asarray(classes)))
        payload["calibration"] = record
        info |= {
            "temperature": record["temperature"],
            "val_ece": record["before"]["ece"],
            "val_ece_calibrated": record["after"]["ece"],
        }
    model = save_checkpoint(out, payload)
    _, csv, js = history_paths(out)
    write_atomic(csv, lambda tmp: pd.DataFrame([info]).to_csv(tmp, index=False), overwrite=True)
    write_text(js, json.dumps([info], indent=2))
    return model, info


STAGE = Stage(
    "train",
    "train the U-Net (validation each epoch) or a per-pixel model on a patch store's sample",
    TrainOptions,
    run,
    "kerinci-xr train patches.zarr --epochs 30 --out model.pt",
    args=("patches",),
    extra_products=_history,
    replaces=lambda o: o.overwrite or o.resume,
    distributed=True,
)
