"""Training: the U-Net on a patch store's training split, validated each epoch; checkpoints.

Cross-entropy ignores nodata (label 0), with optional class weights and Dice term; AdamW with
a cosine schedule; seeded augmentation; early stopping on validation mean IoU; bf16 autocast
on CUDA. Same seed, same weights on CPU; ``resume`` continues exactly where the last epoch ended.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import InputFileNotFoundError, InvalidInputError, KerinciError
from .legend import Legend
from .model import UNetConfig, build_unet

__all__ = [
    "CheckpointError",
    "TrainConfig",
    "check_compatible",
    "evaluate_store",
    "fit",
    "load_checkpoint",
    "load_model",
    "pick_device",
    "predict_logits",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "kerinci_xr.checkpoint/1"
ClassWeights = Literal["none", "inverse", "inverse_sqrt"]


class CheckpointError(KerinciError, ValueError):
    """A checkpoint is unreadable, or does not match the data it is used with."""


@dataclass
class TrainConfig:
    """Options of :func:`fit` (all stored in the checkpoint)."""

    epochs: int = 30
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    class_weights: ClassWeights = "inverse_sqrt"
    dice: float = 0.0
    patience: int = 8
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    num_workers: int = 0
    augment: bool = True
    depth: int = 4
    base: int = 32
    norm: str = "batch"
    dropout: float = 0.1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise InvalidInputError(
                f"epochs and batch size must be >= 1, found {self.epochs} and {self.batch_size}."
            )
        if self.class_weights not in ("none", "inverse", "inverse_sqrt"):
            raise InvalidInputError(
                f"class_weights: expected 'none', 'inverse' or 'inverse_sqrt', found {self.class_weights!r}."
            )
        if self.lr <= 0 or self.dice < 0 or self.patience < 1:
            raise InvalidInputError("lr must be > 0, dice >= 0 and patience >= 1.")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def pick_device(device: str = "auto"):
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; otherwise the named device."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InvalidInputError(
            f"device: expected auto, cpu, cuda, cuda:N or mps, found {device!r}."
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("device: CUDA was asked for but is not available. Fix: --device cpu.")
    return dev


# ---- checkpoints -------------------------------------------------------------------------
def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``: tensors and plain containers only)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputFileNotFoundError(
            f"{path}: model checkpoint not found. Fix: train one with `kerinci-xr train`."
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
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
    return ckpt


def check_compatible(ckpt: dict[str, Any], *, bands: list[str], legend: Legend | None, source: str) -> None:
    """Refuse a checkpoint whose bands or classes differ from the data's."""
    if list(ckpt["bands"]) != list(bands):
        raise CheckpointError(
            f"{source}: the model was trained on bands {list(ckpt['bands'])}, the data has "
            f"{list(bands)}. Fix: prepare the data with the same bands, or train a new model."
        )
    if legend is not None:
        mine = Legend.from_dict(ckpt["legend"])
        if mine.values != legend.values:
            raise CheckpointError(
                f"{source}: the model was trained for classes {list(mine.values)}, the data's legend "
                f"has {list(legend.values)}. Fix: use the legend the model was trained with."
            )


def load_model(ckpt: dict[str, Any], device=None):
    """Rebuild the U-Net of a checkpoint with its weights, in eval mode."""
    import torch

    model = build_unet(UNetConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model_state"])
    model.eval()
    return model.to(device or torch.device("cpu"))


def _save(path: Path, payload: dict[str, Any]) -> None:
    import torch

    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


# ---- loss and evaluation -----------------------------------------------------------------
def _class_weights(store: str | Path, n: int, mode: ClassWeights):
    import torch
    import zarr

    if mode == "none":
        return None
    g = zarr.open_group(str(store), mode="r")
    split = np.asarray(g["split"][:], dtype=object)
    idx = np.flatnonzero(split == "train")
    labels, valid = g["labels"].oindex[idx], g["valid"].oindex[idx]
    counts = np.bincount(labels[valid].ravel(), minlength=n + 1)[1 : n + 1].astype(np.float64)
    freq = counts / max(counts.sum(), 1)
    w = np.zeros(n)
    seen = counts > 0
    w[seen] = 1 / freq[seen] if mode == "inverse" else 1 / np.sqrt(freq[seen])
    w[seen] /= (w[seen] * freq[seen]).sum()  # expected weight 1 per pixel
    return torch.tensor(w, dtype=torch.float32)


def loss_fn(logits, labels, *, weight=None, dice: float = 0.0):
    """Cross-entropy over labelled pixels (label 0 ignored), plus ``dice`` x soft Dice loss."""
    import torch
    import torch.nn.functional as F

    target = labels - 1  # ids 1..N -> logits 0..N-1; nodata 0 -> -1, ignored
    ce = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=-1)
    if not torch.isfinite(ce):  # a batch without any labelled pixel
        ce = logits.sum() * 0.0
    if dice <= 0:
        return ce
    mask = (target >= 0).unsqueeze(1).float()
    prob = logits.float().softmax(1) * mask
    onehot = F.one_hot(target.clamp(min=0), logits.shape[1]).permute(0, 3, 1, 2).float() * mask
    inter = (prob * onehot).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    d = 1 - (2 * inter[present] + 1) / (denom[present] + 1)
    return ce + dice * (d.mean() if present.any() else 0.0)


def predict_logits(model, x, *, amp: bool = True):
    """Logits of a batch under ``no_grad``, with bf16 autocast on CUDA."""
    import torch

    with torch.no_grad():
        if x.device.type == "cuda" and amp:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return model(x).float()
        return model(x)


def evaluate_loader(model, loader, n_classes: int, device, *, amp: bool = True) -> np.ndarray:
    """Confusion matrix of a model over every batch of a loader."""
    from .metrics import confusion_matrix

    model.eval()
    cm = np.zeros((n_classes + 1, n_classes + 1), dtype=np.int64)
    for x, y in loader:
        pred = predict_logits(model, x.to(device, non_blocking=True), amp=amp).argmax(1) + 1
        cm += confusion_matrix(y.numpy(), pred.cpu().numpy(), n_classes)
    return cm


# ---- the loop ----------------------------------------------------------------------------
def _prefetch(loader, device, depth: int = 3):
    """Iterate a loader with the next batches prepared (and copied to the device) by a thread.

    Batch assembly (indexing, augmentation, the host-to-device copy) overlaps the training
    step, so the step waits for data only when the loader is slower than the model.
    """
    import queue
    import threading

    import torch

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()
    cuda = device.type == "cuda"
    stream = torch.cuda.Stream(device) if cuda else None

    def work() -> None:
        try:
            for x, y in loader:
                if stop.is_set():
                    return
                if cuda:
                    with torch.cuda.stream(stream):
                        x = x.pin_memory().to(device, non_blocking=True)
                        y = y.pin_memory().to(device, non_blocking=True)
                        event = torch.cuda.Event()
                        event.record(stream)
                    q.put((x, y, event))
                else:
                    q.put((x, y, None))
        except BaseException as exc:  # surfaced in the training thread
            q.put(exc)
            return
        q.put(done)

    thread = threading.Thread(target=work, daemon=True, name="kerinci-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            x, y, event = item
            if event is not None:
                torch.cuda.current_stream(device).wait_event(event)
            yield x, y
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", file=sys.stderr, leave=False, dynamic_ncols=True)


def fit(
    store: str | Path,
    out: str | Path,
    *,
    config: TrainConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    until_epoch: int | None = None,
) -> dict[str, Any]:
    """Train a U-Net on ``store``'s training split; validate on its validation split each epoch.

    Writes ``out`` (the best checkpoint by validation mean IoU), ``<out stem>.last.pt`` (the
    last epoch, with optimiser, scheduler and RNG state for ``resume``) and
    ``<out stem>.history.csv`` / ``.json`` (per-epoch loss, accuracy, mIoU, data-wait fraction).
    ``until_epoch`` stops this run after that epoch (a job with a time limit); a later call with
    ``resume=True`` continues it and ends with the same weights as one uninterrupted run.
    Returns the history and paths.
    """
    import torch

    from .batching import make_loader
    from .metrics import accuracy_report
    from .patches import open_patches

    cfg = config or TrainConfig()
    out = Path(out)
    last_path = out.with_name(out.stem + ".last.pt")
    hist_csv, hist_json = out.with_name(out.stem + ".history.csv"), out.with_name(out.stem + ".history.json")
    ds = open_patches(store)
    legend = Legend.from_json(ds.attrs["legend"])
    bands = [str(b) for b in ds["band"].values]
    splits = np.asarray(ds["split"].values, dtype=object)
    if not (splits == "train").any():
        raise InvalidInputError(
            f"{store}: the training split is empty. Fix: sample with a larger train fraction."
        )
    has_val = bool((splits == "val").any())
    patch = int(ds.attrs["patch"])
    mcfg = UNetConfig(
        in_channels=len(bands),
        n_classes=legend.n_classes,
        depth=cfg.depth,
        base=cfg.base,
        norm=cfg.norm,
        dropout=cfg.dropout,  # type: ignore[arg-type]
    )
    if patch % mcfg.multiple:
        raise InvalidInputError(
            f"{store}: patches of {patch} pixels are not divisible by 2 ** depth = {mcfg.multiple}. "
            "Fix: lower depth or sample other patch sizes."
        )
    if not resume:
        from .store import check_output

        check_output(out, overwrite=overwrite)
    device = pick_device(cfg.device)
    amp = cfg.amp and device.type == "cuda"
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(cfg.seed)
    model = build_unet(mcfg).to(device)
    train_loader = make_loader(
        store,
        split="train",
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        augment=cfg.augment,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
    )
    val_loader = (
        make_loader(store, split="val", batch_size=cfg.batch_size, seed=cfg.seed, num_workers=cfg.num_workers)
        if has_val
        else None
    )
    steps = len(train_loader) * cfg.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = (
        torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=steps, pct_start=min(0.3, 2 / cfg.epochs), anneal_strategy="cos"
        )
        if steps > 1
        else torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    )
    weight = _class_weights(store, legend.n_classes, cfg.class_weights)
    weight = weight.to(device) if weight is not None else None
    history: list[dict[str, Any]] = []
    start, best, stale = 0, -math.inf, 0
    if resume:
        if not last_path.exists():
            raise InputFileNotFoundError(f"{last_path}: nothing to resume from. Fix: train without --resume.")
        state = load_checkpoint(last_path)
        check_compatible(state, bands=bands, legend=legend, source=str(last_path))
        if state["model_config"] != mcfg.to_dict():
            raise CheckpointError(f"{last_path}: the model configuration differs from this run's.")
        model.load_state_dict(state["model_state"])
        opt.load_state_dict(state["optimizer_state"])
        sched.load_state_dict(state["scheduler_state"])
        torch.set_rng_state(state["rng_state"])
        history, start = list(state["history"]), int(state["epoch"])
        best, stale = float(state["best_miou"]), int(state["stale_epochs"])
    base_payload = {
        "format": CHECKPOINT_FORMAT,
        "model_config": mcfg.to_dict(),
        "bands": bands,
        "band_mean": [float(v) for v in ds.attrs["band_mean"]],
        "band_std": [float(v) for v in ds.attrs["band_std"]],
        "legend": legend.to_dict(),
        "patch": patch,
        "train_config": {k: v for k, v in asdict(cfg).items() if k != "extra"},
        "store": str(store),
    }
    for epoch in range(start, min(cfg.epochs, until_epoch or cfg.epochs)):
        if stale >= cfg.patience:
            log.info("early stop: no mIoU improvement for %d epochs", stale)
            break
        model.train()
        train_loader.sampler.set_epoch(epoch)
        bar = _progress(len(train_loader), f"epoch {epoch + 1}/{cfg.epochs}", progress)
        total_loss, n_batches, wait, busy, images = torch.zeros((), device=device), 0, 0.0, 0.0, 0
        t_epoch = time.perf_counter()
        t0 = time.perf_counter()
        for x, y in _prefetch(train_loader, device):
            t1 = time.perf_counter()
            wait += t1 - t0
            if amp:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    logits = model(x)
            else:
                logits = model(x)
            loss = loss_fn(logits, y, weight=weight, dice=cfg.dice)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.detach()  # no host sync per step: the GPU keeps its queue full
            n_batches += 1
            images += x.shape[0]
            t0 = time.perf_counter()
            busy += t0 - t1
            if bar is not None:
                if n_batches % 10 == 0:
                    bar.set_postfix(loss=f"{float(total_loss) / n_batches:.4f}")
                bar.update()
        if bar is not None:
            bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize()
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": float(total_loss) / max(n_batches, 1),
            "lr": float(opt.param_groups[0]["lr"]),
            "images_per_s": images / max(time.perf_counter() - t_epoch, 1e-9),
            "data_wait_frac": wait / max(wait + busy, 1e-9),
        }
        if val_loader is not None:
            cm = evaluate_loader(model, val_loader, legend.n_classes, device, amp=amp)
            rep = accuracy_report(cm, legend)
            row |= {
                "val_overall_accuracy": rep["overall_accuracy"],
                "val_kappa": rep["kappa"],
                "val_mean_iou": rep["mean_iou"],
            }
            score = rep["mean_iou"] if rep["mean_iou"] is not None else -1.0
        else:
            score = -row["train_loss"]
        row["seconds"] = time.perf_counter() - t_epoch
        history.append(row)
        improved = score > best
        if improved:
            best, stale = score, 0
        else:
            stale += 1
        if progress:
            vm = row.get("val_mean_iou")
            print(
                f"epoch {epoch + 1:>3}/{cfg.epochs}  loss {row['train_loss']:.4f}  "
                f"val mIoU {'-' if vm is None else f'{vm:.3f}'}  "
                f"val OA {row.get('val_overall_accuracy') or 0:.3f}  {row['images_per_s']:.1f} img/s  "
                f"data wait {100 * row['data_wait_frac']:.1f} %  "
                f"ETA {row['seconds'] * (cfg.epochs - epoch - 1):.0f} s" + ("  *best*" if improved else ""),
                file=sys.stderr,
            )
        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        payload = base_payload | {
            "model_state": weights,
            "history": history,
            "epoch": epoch + 1,
            "best_miou": float(best),
        }
        if improved:
            _save(out, payload)
        _save(
            last_path,
            payload
            | {
                "optimizer_state": opt.state_dict(),
                "scheduler_state": sched.state_dict(),
                "rng_state": torch.get_rng_state(),
                "stale_epochs": stale,
            },
        )
        _write_history(history, hist_csv, hist_json)
    if not out.exists():  # resumed after the last improvement was saved elsewhere
        _save(out, load_checkpoint(last_path))
    return {"history": history, "best": out, "last": last_path, "history_csv": hist_csv, "best_miou": best}


def _write_history(history: list[dict[str, Any]], csv: Path, js: Path) -> None:
    import pandas as pd

    tmp = csv.with_name(f".{csv.name}.tmp")
    pd.DataFrame(history).to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(csv)
    tmp = js.with_name(f".{js.name}.tmp")
    tmp.write_text(json.dumps(history, indent=2))
    tmp.replace(js)


def evaluate_store(
    store: str | Path,
    checkpoint: str | Path,
    *,
    split: str = "test",
    device: str = "auto",
    batch_size: int = 32,
) -> dict[str, Any]:
    """Accuracy of a checkpoint on one split of a patch store (labelled, valid pixels only)."""
    from .batching import make_loader
    from .metrics import accuracy_report
    from .patches import open_patches

    ds = open_patches(store)
    legend = Legend.from_json(ds.attrs["legend"])
    ckpt = load_checkpoint(checkpoint)
    check_compatible(ckpt, bands=[str(b) for b in ds["band"].values], legend=legend, source=str(checkpoint))
    dev = pick_device(device)
    model = load_model(ckpt, dev)
    loader = make_loader(store, split=split, batch_size=batch_size, shuffle=False, augment=False)
    # normalise with the statistics the model was trained with, not the store's own
    loader.dataset.mean = np.asarray(ckpt["band_mean"], dtype=np.float32)[:, None, None]
    loader.dataset.std = np.asarray(ckpt["band_std"], dtype=np.float32)[:, None, None]
    cm = evaluate_loader(model, loader, legend.n_classes, dev)
    report = accuracy_report(cm, legend)
    report["source"] = {
        "patches": str(store),
        "split": split,
        "model": str(checkpoint),
        "patches_evaluated": len(loader.dataset),
    }
    return report
