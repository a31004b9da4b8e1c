"""The U-Net's architecture (:class:`UNetConfig`) and training options (:class:`TrainConfig`, its
presets): plain dataclasses without torch, so that the command line, the pipeline files and the
Python API declare the ``train`` and ``crossval`` options (``kerinci-xr --help``) without importing
PyTorch. :mod:`kerinci_xr.model` and :mod:`kerinci_xr.training` use them and export them too.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np

from ._locations import as_location
from ._options import option
from .errors import InvalidInputError

__all__ = ["PRESETS", "ClassWeights", "Norm", "Preset", "TrainConfig", "UNetConfig", "history_paths"]

Norm = Literal["batch", "group", "instance", "none"]


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a U-Net.

    Parameters
    ----------
    in_channels
        Input bands.
    n_classes
        Output classes (training ids 1..N map to logits 0..N-1).
    depth
        Number of 2x down-samplings; inputs must be divisible by ``2 ** depth``.
    base
        Channels of the first level; they double at each level down.
    norm
        Normalisation after each convolution.
    dropout
        Dropout probability in the bottleneck and decoder (0 = none).
    """

    in_channels: int
    n_classes: int
    depth: int = 4
    base: int = 32
    norm: Norm = "batch"
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.n_classes < 1:
            raise InvalidInputError(
                f"U-Net: expected at least one band and one class, found {self.in_channels} "
                f"band(s) and {self.n_classes} class(es)."
            )
        if not 1 <= self.depth <= 6:
            raise InvalidInputError(f"U-Net depth: expected 1..6, found {self.depth}.")
        if self.base < 4:
            raise InvalidInputError(f"U-Net base width: expected >= 4 channels, found {self.base}.")
        if self.norm not in ("batch", "group", "instance", "none"):
            raise InvalidInputError(
                f"U-Net norm: expected 'batch', 'group', 'instance' or 'none', found {self.norm!r}."
            )
        if not 0 <= self.dropout < 1:
            raise InvalidInputError(f"U-Net dropout: expected 0 <= p < 1, found {self.dropout}.")

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2**self.depth

    @property
    def receptive_field(self) -> int:
        """Receptive field in pixels (two 3x3 convolutions per level, both ways, plus pooling)."""
        d = self.depth
        return 1 + 8 * (2**d - 1) + 4 * 2**d + (2**d - 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


ClassWeights = Literal["none", "inverse", "inverse_sqrt"]
Preset = Literal["wall-to-wall", "sparse"]


def _unet(name: str) -> Any:
    """The architecture's default of ``name``: declared once, by :class:`UNetConfig`."""
    return UNetConfig.__dataclass_fields__[name].default


PRESETS: dict[str, dict[str, Any]] = {
    # what the toolkit was built with: dense maps, 128-pixel patches
    "wall-to-wall": {
        "depth": _unet("depth"),
        "base": _unet("base"),
        "lr": 2e-3,
        "class_weights": "inverse_sqrt",
        "patience": 8,
    },
    # a small net that cannot memorise a few hundred labelled pixels, no weights that multiply a
    # rare class's few pixels, no early stopping on a validation area of a handful of pixels
    # (patience = every epoch); it won on one NC split but lost on identical folds of two of
    # three datasets (benchmarks/README.md), so it is not the default
    "sparse": {"depth": 2, "base": 16, "lr": 1e-3, "class_weights": "none", "patience": "epochs"},
}


@dataclass
class TrainConfig:
    """Options of :func:`fit` (all stored in the checkpoint); the ``train`` stage's options too."""

    preset: Preset = option(
        "wall-to-wall",
        "defaults of the U-Net options left unset: wall-to-wall (depth 4, base 32, class weights, early "
        "stopping), or sparse (depth 2, base 16, lr 1e-3, no class weights, no early stopping); measured "
        "on sparse labels in benchmarks/README.md",
    )
    epochs: int = option(30, "training epochs (at most: early stopping may end sooner)", ge=1)
    batch_size: int = option(16, "patches per training step", ge=1)
    lr: float | None = option(
        None, "peak learning rate of the cosine one-cycle schedule (default: --preset's)", gt=0
    )
    weight_decay: float = option(1e-4, "AdamW weight decay", ge=0)
    class_weights: ClassWeights | None = option(
        None, "loss weight per class from training pixel counts (default: --preset's)"
    )
    dice: float = option(0.0, "weight of the Dice term added to cross-entropy", ge=0)
    patience: int | None = option(
        None, "epochs without validation mIoU gain before stopping (default: --preset's)", ge=1
    )
    select: Literal["best", "last"] = option(
        "best",
        "the checkpoint kept: the epoch of best validation mIoU, or the last epoch (a fixed number of "
        "epochs: no choice made on the validation pixels, no early stopping)",
    )
    seed: int = option(0, "seeds weights, batch order and augmentation", ge=0)
    device: str = option("auto", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    amp: bool = option(
        True, "bf16 autocast on CUDA", off="train in float32 on CUDA too (no bf16 autocast; slower)"
    )
    loader_workers: int = option(0, "DataLoader worker processes", ge=0)
    augment: bool = option(
        True,
        "random flips and 90-degree rotations of training patches",
        off="train on the patches as sampled (no random flips or 90-degree rotations)",
    )
    depth: int | None = option(
        None, "U-Net depth, 2 ** depth must divide the patch size (default: --preset's)", ge=1
    )
    base: int | None = option(None, "channels of the first U-Net level (default: --preset's)", ge=1)
    sync_bn: bool = option(
        False,
        "under torchrun: batch norm statistics over every process's part of the batch (SyncBatchNorm; CUDA)",
    )
    dist_timeout: float = option(
        600.0, "under torchrun: seconds a process waits for the others before the run fails", gt=0
    )
    calibrate: bool = option(
        True,
        "fit a temperature on the validation split: calibrated probabilities, confidence and uncertainty "
        "(the classes do not change)",
        off="keep the probabilities as trained (no temperature is fitted)",
    )
    norm: Norm = option(_unet("norm"), "normalisation after each convolution")
    dropout: float = option(_unet("dropout"), "dropout in the bottleneck and decoder", ge=0, le=1)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise InvalidInputError(
                f"epochs and batch size must be >= 1, found {self.epochs} and {self.batch_size}."
            )
        if self.preset not in PRESETS:
            raise InvalidInputError(f"preset: expected 'wall-to-wall' or 'sparse', found {self.preset!r}.")
        if self.class_weights not in (None, "none", "inverse", "inverse_sqrt"):
            raise InvalidInputError(
                f"class_weights: expected 'none', 'inverse' or 'inverse_sqrt', found {self.class_weights!r}."
            )
        lr, patience = 1.0 if self.lr is None else self.lr, 1 if self.patience is None else self.patience
        numbers = (lr, self.dice, self.weight_decay, self.dropout)
        if not all(np.isfinite(numbers)) or lr <= 0 or self.dice < 0 or patience < 1:
            raise InvalidInputError(
                f"lr must be > 0, dice >= 0, patience >= 1 and all finite; found lr {self.lr}, "
                f"dice {self.dice}, patience {self.patience}, weight_decay {self.weight_decay}, "
                f"dropout {self.dropout}."
            )
        if self.loader_workers < 0:
            raise InvalidInputError(
                f"loader_workers: expected 0 or more processes, found {self.loader_workers}."
            )

    def resolved(self, *, patch: int) -> TrainConfig:
        """This configuration with every option left unset taken from its preset; an unset depth
        is lowered until ``2 ** depth`` divides ``patch``."""
        name = self.preset
        values = {k: v for k, v in PRESETS[name].items() if getattr(self, k) is None}
        if values.get("patience") == "epochs":
            values["patience"] = self.epochs
        if "depth" in values:
            while values["depth"] > 1 and patch % 2 ** values["depth"]:
                values["depth"] -= 1
        return dataclasses.replace(self, preset=name, **values)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(TrainConfig)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        """The training options alone (what a checkpoint records)."""
        return {f.name: getattr(self, f.name) for f in fields(TrainConfig)}


def history_paths(out: str | os.PathLike) -> tuple[Any, Any, Any]:
    """``<stem>.last.pt``, ``<stem>.history.csv`` and ``<stem>.history.json`` beside a checkpoint."""
    out = as_location(out)
    last, csv, js = (out.with_name(out.stem + s) for s in (".last.pt", ".history.csv", ".history.json"))
    return last, csv, js
