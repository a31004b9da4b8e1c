"""``train``: the U-Net on a patch store, validated each epoch; best and last checkpoints, history."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any, Literal

import pandas as pd

from .._options import option
from .._outputs import write_atomic, write_text
from .._products import Kind
from ..checkpoint import booster_digest, save_checkpoint
from ..cube import cube_view, open_cube
from ..errors import InvalidInputError
from ..legend import legend_of
from ..patches import open_patches, stored_layout
from ..pixels import FeatureRecipe, fit_pixels, pixel_sample
from ..training import TrainConfig, fit, history_paths
from ._base import Context, Stage

__all__ = ["STAGE", "TrainOptions"]


@dataclass(kw_only=True)
class TrainOptions(TrainConfig):
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
    indices: tuple[str, ...] = option((), "per-pixel models: spectral indices as features (ndvi,ndwi,nbr)")
    windows: tuple[int, ...] = option(
        (), "per-pixel models: mean and std of every band over these neighbourhoods (3,5)", ge=3
    )
    rounds: int = option(300, "per-pixel models: boosting rounds (trees per class; forest size)", ge=1)
    max_pixels: int = option(
        20_000, "per-pixel models: at most this many training pixels per class (a seeded choice)", ge=1
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
    result = fit(
        o.patches,
        o.out,
        config=config,
        resume=o.resume,
        overwrite=o.overwrite,
        progress=ctx.progress,
        until_epoch=o.until_epoch,
    )
    ctx.echo(f"best validation mIoU {result.best_miou:.4f}")
    return {"model": result.best, "model_last": result.last, "history": result.history_csv, "result": result}


def _train_pixels(o: TrainOptions, ctx: Context) -> dict[str, Any]:
    """A per-pixel model on the labelled pixels of the patch store's training area (its cube and
    split layout), validated on the validation area's pixels."""
    if o.resume or o.until_epoch is not None:
        raise InvalidInputError(
            f"--resume and --until-epoch are for the U-Net; a {o.model} model trains in one go."
        )
    store = open_patches(o.patches)
    cube = cube_view(
        open_cube(store.attrs["cube"]),
        date=store.attrs.get("date") or None,
        temporal=store.attrs.get("temporal", "date"),
    )
    layout = stored_layout(store, (cube.sizes["y"], cube.sizes["x"]))
    bands = [str(b) for b in store["band"].values]
    roles = {r: b for r, b in json.loads(store.attrs.get("band_roles") or "{}").items() if b in bands}
    recipe = FeatureRecipe(tuple(bands), roles, tuple(o.indices), tuple(o.windows))
    train = pixel_sample(cube, layout, recipe, split="train", max_per_class=o.max_pixels, seed=o.seed)
    val = pixel_sample(cube, layout, recipe, split="val", max_per_class=o.max_pixels, seed=o.seed)
    text, classes, info = fit_pixels(train, kind=o.model, rounds=o.rounds, seed=o.seed, val=val)  # type: ignore[arg-type]
    legend = legend_of(store)
    history = [info | {"model": o.model, "features": len(recipe.names())}]
    payload = {
        "model_kind": o.model,
        "booster": text,
        "booster_sha256": booster_digest(text),
        "classes": classes,
        "features": recipe.to_dict(),
        "bands": bands,
        "legend": legend.to_dict(),
        "history": history,
        "sample": {"patches": str(o.patches), "cube": str(store.attrs["cube"]), "seed": o.seed},
    }
    model = save_checkpoint(o.out, payload)
    _, csv, js = history_paths(o.out)
    write_atomic(csv, lambda tmp: pd.DataFrame(history).to_csv(tmp, index=False), overwrite=True)
    write_text(js, json.dumps(history, indent=2))
    val_oa = (
        f", validation OA {info['val_oa']:.3f} on {info['val_pixels']:,} pixels" if "val_oa" in info else ""
    )
    ctx.echo(f"{o.model}: {info['train_pixels']:,} training pixels, {len(recipe.names())} features{val_oa}")
    return {"model": model, "history": csv, "history_json": js}


STAGE = Stage(
    "train",
    "train the U-Net (validation each epoch) or a per-pixel model on a patch store's sample",
    TrainOptions,
    run,
    "kerinci-xr train patches.zarr --epochs 30 --out model.pt",
    args=("patches",),
    extra_products=_history,
    replaces=lambda o: o.overwrite or o.resume,
)
