"""``train``: the U-Net on a patch store, validated each epoch; best and last checkpoints, history."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .._options import option
from .._products import Kind
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
    resume: bool = option(False, "continue from <stem>.last.pt")
    until_epoch: int | None = option(None, "stop after this epoch (continue later with --resume)", ge=1)
    overwrite: bool = option(False, "replace an existing checkpoint", pipeline=False)


def _history(o: TrainOptions) -> dict[str, Path]:
    last, csv, js = history_paths(o.out)
    return {"model_last": last, "history": csv, "history_json": js}


def run(o: TrainOptions, ctx: Context) -> dict[str, Any]:
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


STAGE = Stage(
    "train",
    "train the U-Net on a patch store (validation each epoch)",
    TrainOptions,
    run,
    "kerinci-xr train patches.zarr --epochs 30 --out model.pt",
    args=("patches",),
    extra_products=_history,
    replaces=lambda o: o.overwrite or o.resume,
)
