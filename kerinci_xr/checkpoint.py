"""Checkpoints: safe save/load, compatibility checks, the model they hold, and input normalisation.

Training, evaluation and prediction all go through this module: a checkpoint is loaded with
``torch.load(..., weights_only=True)`` (tensors and plain containers only, never code), checked
against the data's bands and legend, turned back into its :class:`~kerinci_xr.model.UNet`, and
its band statistics normalise inputs with :func:`normalize`, the one normalisation both the
patch loader and whole-scene prediction call.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._lazy import lazy_module
from ._locations import Location
from ._outputs import write_atomic
from ._products import Kind, product_bytes
from .errors import CheckpointError
from .legend import Legend, legend_of
from .settings import UNetConfig

if TYPE_CHECKING:  # torch loads when a checkpoint is read or written, not for --help
    import torch

#: The U-Net's module (it imports PyTorch), loaded when a model is rebuilt.
model_lib = lazy_module("kerinci_xr.model")

__all__ = [
    "CHECKPOINT_FORMAT",
    "band_stats_of",
    "booster_digest",
    "check_compatible",
    "load_checkpoint",
    "load_model",
    "normalize",
    "save_checkpoint",
    "temperature_of",
]

CHECKPOINT_FORMAT = "kerinci_xr.checkpoint/1"


def normalize(image: np.ndarray, valid: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Normalise ``(..., band, y, x)`` float32 in place: ``(x - mean) / std``; 0 where invalid.

    ``mean`` and ``std`` are ``(band, 1, 1)`` float32; ``valid`` is ``(..., y, x)`` bool.
    Non-finite values also become 0 (the mean, in normalised units).
    """
    image -= mean
    image /= std
    np.copyto(image, np.float32(0), where=~np.isfinite(image) | ~valid[..., None, :, :])
    return image


def band_stats_of(ckpt: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The training mean and standard deviation of a checkpoint, shaped ``(band, 1, 1)`` float32."""
    mean = np.asarray(ckpt["band_mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(ckpt["band_std"], dtype=np.float32)[:, None, None]
    return mean, std


def temperature_of(ckpt: dict[str, Any], source: str = "the checkpoint") -> float:
    """The temperature ``predict`` divides the model's log-probabilities by (1.0: uncalibrated)."""
    record = ckpt.get("calibration") or {}
    value = record.get("temperature", 1.0) if isinstance(record, dict) else None
    if not isinstance(value, int | float) or not np.isfinite(value) or value <= 0:
        raise CheckpointError(
            f"{source}: its calibration temperature must be a finite number > 0, found {value!r}. "
            "Fix: retrain (or restore the file the training wrote)."
        )
    return float(value)


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Location:
    """Save a checkpoint atomically (``payload`` must hold only tensors and plain containers)."""
    import torch

    return write_atomic(path, lambda tmp: torch.save({"format": CHECKPOINT_FORMAT, **payload}, tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``: tensors and plain containers only)."""
    import torch

    data = io.BytesIO(product_bytes(path, Kind.MODEL))
    try:
        ckpt = torch.load(data, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():  # not torch's safety refusal: a damaged file
            raise CheckpointError(
                f"{path}: expected a kerinci_xr checkpoint, found a file torch cannot read "
                f"({str(exc)[:200]}). Fix: retrain or restore the file."
            ) from exc
        # torch's own text goes on to say how to load it unsafely: not advice to pass on
        raise CheckpointError(
            f"{path}: refused: the file holds Python objects other than tensors and plain containers, and "
            "loading those can run arbitrary code, so kerinci-xr never does. A checkpoint written by "
            "kerinci-xr train holds none. Fix: use a checkpoint written by kerinci-xr train (or retrain)."
        ) from None
    except Exception as exc:  # torch raises many unrelated types on a damaged file
        raise CheckpointError(
            f"{path}: expected a kerinci_xr checkpoint, found a file torch cannot load safely "
            f"({type(exc).__name__}: {str(exc)[:200]}). Fix: retrain or restore the file."
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: expected a checkpoint of format {CHECKPOINT_FORMAT!r}, found "
            f"{ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt).__name__!r}."
        )
    kind = ckpt.get("model_kind", "unet")
    if kind not in _KEYS:
        raise CheckpointError(
            f"{path}: expected a model of kind {sorted(_KEYS)}, found {kind!r}. Fix: use a checkpoint "
            "written by kerinci-xr train."
        )
    wrong = [key for key, t in _KEYS[kind].items() if not isinstance(ckpt.get(key), t)]
    if wrong:
        raise CheckpointError(
            f"{path}: expected a complete checkpoint, found missing or badly typed {wrong}. "
            "Fix: retrain, or restore the file the training wrote."
        )
    if kind == "unet":
        _check_values(ckpt, path)
    else:
        _check_booster(ckpt, path)
    ckpt["model_kind"] = kind
    return ckpt


def booster_digest(text: str) -> str:
    """The checksum a per-pixel model's text is stored with (LightGBM aborts the whole process on
    some malformed model texts, so an altered one is refused before LightGBM reads it)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_booster(ckpt: dict[str, Any], path: str | os.PathLike) -> None:
    text = ckpt["booster"]
    if ckpt.get("booster_sha256") != booster_digest(text) or "end of trees" not in text:
        raise CheckpointError(
            f"{path}: the LightGBM model in this checkpoint cannot be read: its text does not match the "
            "checksum it was saved with (altered or truncated). Fix: retrain, or restore the file the "
            "training wrote."
        )


def _check_values(ckpt: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse a checkpoint whose numbers cannot give a map: non-finite weights or statistics, or a
    band whose standard deviation is not positive (normalising by it divides by zero)."""
    import torch

    mean, std = np.asarray(ckpt["band_mean"], dtype=float), np.asarray(ckpt["band_std"], dtype=float)
    n = len(ckpt["bands"])
    if mean.shape != (n,) or std.shape != (n,):
        raise CheckpointError(
            f"{path}: expected a mean and a standard deviation for each of its {n} bands, found "
            f"{mean.size} and {std.size}. Fix: retrain, or restore the file the training wrote."
        )
    bad = [b for b, m, s in zip(ckpt["bands"], mean, std, strict=True) if not (np.isfinite(m) and s > 0)]
    if bad or not np.isfinite(std).all():
        raise CheckpointError(
            f"{path}: the normalisation of bands {bad} is unusable (mean must be finite, standard deviation "
            "finite and > 0). Fix: retrain on patches where those bands hold valid pixels."
        )
    broken = [
        k
        for k, v in ckpt["model_state"].items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if broken:
        raise CheckpointError(
            f"{path}: the model's weights hold NaN or infinite values ({broken[:3]}"
            f"{' ...' if len(broken) > 3 else ''}): training diverged or the file was altered. "
            "Fix: retrain (a lower --lr), or restore the file the training wrote."
        )


#: What a checkpoint of each kind of model holds, and of which type. A per-pixel model holds
#: LightGBM's own text of the model (``booster``), never a pickle, and its feature recipe.
_UNET_KEYS = {
    "model_config": dict,
    "model_state": dict,
    "bands": list,
    "band_mean": list,
    "band_std": list,
    "legend": dict,
}
_PIXEL_KEYS = {"booster": str, "classes": list, "features": dict, "bands": list, "legend": dict}
_KEYS = {"unet": _UNET_KEYS, "lightgbm": _PIXEL_KEYS, "rf": _PIXEL_KEYS}


def check_compatible(ckpt: dict[str, Any], *, bands: list[str], legend: Legend | None, source: str) -> None:
    """Refuse a checkpoint whose bands or classes differ from the data's."""
    if list(ckpt["bands"]) != list(bands):
        raise CheckpointError(
            f"{source}: the model was trained on bands {list(ckpt['bands'])}, the data has "
            f"{list(bands)}. Fix: prepare the data with the same bands, or train a new model."
        )
    if legend is not None:
        mine = legend_of(ckpt)
        if mine.values != legend.values:
            raise CheckpointError(
                f"{source}: the model was trained for classes {list(mine.values)}, the data's legend "
                f"has {list(legend.values)}. Fix: use the legend the model was trained with."
            )


def load_model(ckpt: dict[str, Any], device: torch.device | None = None) -> torch.nn.Module:
    """Rebuild the U-Net of a checkpoint with its weights, in eval mode."""
    import torch

    model = model_lib.UNet(UNetConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model_state"])
    model.eval()
    return model.to(device or torch.device("cpu"))
