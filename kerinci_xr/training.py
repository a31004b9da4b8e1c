"""Training: the U-Net on a patch store's training split, validated each epoch; checkpoints.

Cross-entropy ignores nodata (label 0), with optional class weights and Dice term; AdamW with
a cosine schedule; seeded augmentation; early stopping on validation mean IoU; bf16 autocast
on CUDA. Same seed, same weights on CPU; ``resume`` continues exactly where the last epoch ended.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import xarray as xr

from ._hashing import hash_u64
from ._locations import as_location
from ._outputs import check_output, commit_so_far, write_atomic, write_text
from ._products import product_exists, zarr_store
from .batching import make_loader
from .calibration import calibration_record, columns_of
from .checkpoint import (
    band_stats_of,
    check_compatible,
    load_checkpoint,
    load_model,
    save_checkpoint,
    temperature_of,
)
from .cluster import live_progress
from .distributed import DistributedError, World, all_gather, barrier, setup, world
from .errors import CheckpointError, InputFileNotFoundError, InvalidInputError, TrainingDivergedError
from .legend import Legend, legend_of
from .metrics import accuracy_report, confusion_matrix
from .model import UNet, UNetConfig, pick_device
from .patches import open_patches, window_pixels
from .settings import PRESETS, ClassWeights, TrainConfig, history_paths

__all__ = [
    "TrainConfig",
    "TrainResult",
    "calibrate_checkpoint",
    "evaluate_loader",
    "evaluate_store",
    "fit",
    "held_out_calibration",
    "logit_share",
    "loss_fn",
    "predict_logits",
]

log = logging.getLogger(__name__)

#: Validation pixels a temperature is fitted on (a hashed choice where a split holds more).
CALIBRATION_PIXELS = 200_000
#: The key of that choice.
CALIBRATION_KEY = 0x5CA1


@dataclass
class TrainResult:
    """What :func:`fit` returns: the per-epoch history and the files it wrote."""

    history: list[dict[str, Any]]
    best: Path
    last: Path
    history_csv: Path
    history_json: Path
    best_miou: float
    config: TrainConfig | None = None  # the options used: the preset's values filled in
    calibration: dict[str, Any] | None = None  # the temperature fitted on the validation split

    def __getitem__(self, key: str) -> Any:  # result["best"] reads as well as result.best
        return getattr(self, key)

    def __repr__(self) -> str:
        return (
            f"TrainResult(epochs={len(self.history)}, best_miou={self.best_miou:.4f}, "
            f"best={str(self.best)!r})"
        )


# ---- loss and evaluation -----------------------------------------------------------------
def _class_weights(store: str | Path, n: int, mode: ClassWeights):
    import zarr

    if mode == "none":
        return None
    g = zarr.open_group(zarr_store(store), mode="r")
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
    with torch.no_grad():
        if x.device.type == "cuda" and amp:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return model(x).float()
        return model(x)


def _once(key: np.ndarray, dist: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """Index of each scene pixel's entry where it lies farthest from its window's edge (the most
    context; ties: the lowest patch, whatever the order the entries came in)."""
    order = np.lexsort((patch, -dist, key))
    return order[np.unique(key[order], return_index=True)[1]]


def evaluate_loader(
    model,
    loader,
    n_classes: int,
    device,
    *,
    amp: bool = True,
    samples: dict | None = None,
    logit_share: float = 0.0,
    world: World | None = None,
) -> np.ndarray:
    """Confusion matrix of a model over a loader's patches, each scene pixel counted once.

    Patches of one split may overlap (up to dozens of times around a dense class); a pixel is
    counted once, with the prediction of the patch where it lies farthest from the window's
    edge (the most context; ties: the patch first in the split). A loader that shuffles, or one without
    window positions, counts every patch pixel.

    ``samples`` (a dict) receives every scored pixel once: ``key`` (row << 32 | col), ``ref`` and
    ``pred``; with ``logit_share`` > 0 also ``logits`` (pixel, class) and ``logit_ref`` of a
    share of them, chosen by a hash of their position (for calibration: the same pixels
    whatever the batch order). With ``world`` (distributed training, each process holding a
    part of the split) the pixels of every process are gathered first: the same matrix, each
    pixel once, in every process.
    """
    model.eval()
    dataset = getattr(loader.dataset, "dataset", loader.dataset)
    starts = getattr(dataset, "starts", None)
    shuffled = getattr(loader.sampler, "shuffle", False)
    cm = np.zeros((n_classes + 1, n_classes + 1), dtype=np.int64)
    keys, dists, refs, preds, pids = [], [], [], [], []
    lkeys, ldists, lrefs, lvals, lpids = [], [], [], [], []
    threshold = np.uint64(min(int(logit_share * 2.0**64), 2**64 - 1)) if logit_share > 0 else None
    seen = 0
    for batch in loader:
        x = batch["image"].to(device, non_blocking=True)
        logits = predict_logits(model, x, amp=amp)
        pred = (logits.argmax(1) + 1).cpu().numpy()
        mask = batch["mask"].numpy()
        if starts is None or shuffled:
            cm += confusion_matrix(mask, pred, n_classes)
            continue
        b, h, w = mask.shape
        ii, jj = np.arange(h)[:, None], np.arange(w)[None, :]
        edge = np.minimum(np.minimum(ii, h - 1 - ii), np.minimum(jj, w - 1 - jj))
        index = batch["index"].numpy() if "index" in batch else np.arange(seen, seen + b)
        for k in range(b):
            lab = mask[k] > 0
            r, c = np.nonzero(lab)
            r0, c0 = starts[index[k]]
            key = ((r + r0).astype(np.int64) << 32) | (c + c0).astype(np.int64)
            keys.append(key)
            pids.append(np.full(key.size, index[k], np.int64))
            dists.append(edge[lab])
            refs.append(mask[k][lab])
            preds.append(pred[k][lab])
            if threshold is not None:
                pick = hash_u64(r + r0, c + c0, CALIBRATION_KEY) <= threshold
                lkeys.append(key[pick])
                lpids.append(np.full(int(pick.sum()), index[k], np.int64))
                ldists.append(edge[r[pick], c[pick]])
                lrefs.append(mask[k][r[pick], c[pick]])
                lvals.append(logits[k][:, r[pick], c[pick]].float().T.cpu().numpy())
        seen += b
    if world is not None and world.active:  # every process's pixels, then each pixel once
        parts = all_gather(world, (keys, dists, refs, preds, pids, lkeys, ldists, lrefs, lvals, lpids))
        keys, dists, refs, preds, pids, lkeys, ldists, lrefs, lvals, lpids = (
            [a for p in parts for a in p[i]] for i in range(10)
        )
    if keys:
        key, dist = np.concatenate(keys), np.concatenate(dists)
        first = _once(key, dist, np.concatenate(pids))
        ref, pred = np.concatenate(refs)[first], np.concatenate(preds)[first]
        cm += confusion_matrix(ref, pred, n_classes)
        if samples is not None:  # each scene pixel once, by position (row << 32 | col)
            samples |= {"key": key[first], "ref": ref.astype(np.uint8), "pred": pred.astype(np.uint8)}
    if samples is not None and lkeys:
        first = _once(np.concatenate(lkeys), np.concatenate(ldists), np.concatenate(lpids))
        samples |= {
            "logits": np.concatenate(lvals)[first].astype(np.float32),
            "logit_ref": np.concatenate(lrefs)[first].astype(np.uint8),
        }
    return cm


def logit_share(store: xr.Dataset, split: str, pixels: int = CALIBRATION_PIXELS) -> float:
    """The share of a split's labelled, valid pixels (each scene pixel once, though patches
    overlap) that holds about ``pixels`` of them."""
    if not (np.array([str(s) for s in store["split"].values]) == split).any():
        return 0.0
    n = window_pixels(store, split)[0].size
    return min(1.0, pixels / n) if n else 0.0


# ---- the loop ----------------------------------------------------------------------------
def _prefetch(loader, device, depth: int = 3):
    """Iterate a loader with the next batches prepared (and copied to the device) by a thread.

    Batch assembly (indexing, augmentation, the host-to-device copy) overlaps the training
    step, so the step waits for data only when the loader is slower than the model.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()
    cuda = device.type == "cuda"
    stream = torch.cuda.Stream(device) if cuda else None

    def work() -> None:
        try:
            for batch in loader:
                x, y = batch["image"], batch["mask"]
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
    if not enabled or not live_progress():  # in a log, the one line per epoch is the progress
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", file=sys.stderr, leave=False, dynamic_ncols=True)


@dataclass
class _Run:
    """Everything one training run holds between its steps."""

    cfg: TrainConfig
    store: Path
    out: Path
    legend: Legend
    device: torch.device
    amp: bool
    model: UNet
    train_loader: Any
    val_loader: Any
    opt: Any
    sched: Any
    weight: Any
    payload: dict[str, Any]
    world: World = field(default_factory=World)
    history: list[dict[str, Any]] = field(default_factory=list)
    start: int = 0
    best: float = -math.inf
    stale: int = 0

    @property
    def paths(self) -> tuple[Path, Path, Path]:
        return history_paths(self.out)


def fit(
    store: str | Path,
    out: str | Path,
    *,
    config: TrainConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    until_epoch: int | None = None,
) -> TrainResult:
    """Train a U-Net on ``store``'s training split; validate on its validation split each epoch.

    Writes ``out`` (the best checkpoint by validation mean IoU), ``<out stem>.last.pt`` (the
    last epoch, with optimiser, scheduler and RNG state for ``resume``) and
    ``<out stem>.history.csv`` / ``.json`` (per-epoch loss, accuracy, mIoU, data-wait fraction).
    ``until_epoch`` stops this run after that epoch (a job with a time limit); a later call with
    ``resume=True`` continues it and ends with the same weights as one uninterrupted run.
    """
    cfg = config or TrainConfig()
    run = _setup(as_location(store), as_location(out), cfg, resume=resume, overwrite=overwrite)
    cfg = run.cfg  # with the preset's values
    if resume:
        _restore(run)
    for epoch in range(run.start, min(cfg.epochs, until_epoch or cfg.epochs)):
        if run.stale >= cfg.patience and cfg.select == "best":
            log.info("early stop: no mIoU improvement for %d epochs", run.stale)
            break
        t_epoch = time.perf_counter()
        try:
            row = _train_epoch(run, epoch, progress)
        except RuntimeError as exc:  # DDP's all-reduce: a process died or stopped answering
            if not run.world.active or isinstance(exc, DistributedError):
                raise
            raise DistributedError(
                f"rank {run.world.rank}: training stopped in epoch {epoch + 1}: another process of the "
                f"run stopped or did not answer within {cfg.dist_timeout:g} s ({str(exc).strip()[:160]}). "
                f"The last committed epoch is {epoch}. Fix: see that rank's message; continue with "
                "--resume (on any number of processes)."
            ) from exc
        if not math.isfinite(row["train_loss"]):  # nothing is saved from a diverged epoch
            raise TrainingDivergedError(
                f"{run.store}: the training loss became {row['train_loss']} in epoch {epoch + 1}; no "
                "checkpoint was written for it. Fix: check the imagery for extreme values (kerinci-xr "
                "info), or lower --lr."
            )
        row |= _validate(run)
        row["seconds"] = time.perf_counter() - t_epoch
        improved = _record(run, row)
        if progress and run.world.main:
            _print_epoch(run, row, improved)
        _save_epoch(run, epoch, improved)
    last, hist_csv, hist_json = run.paths
    calibration = None
    if run.world.main:
        if not product_exists(run.out):  # resumed after the last improvement was saved elsewhere
            save_checkpoint(run.out, load_checkpoint(last))
        if cfg.calibrate and run.val_loader is not None:
            calibration = calibrate_checkpoint(run.out, run.store, device=run.device)
    barrier(run.world)
    return TrainResult(run.history, run.out, last, hist_csv, hist_json, run.best, cfg, calibration)


def _setup(store: Path, out: Path, cfg: TrainConfig, *, resume: bool, overwrite: bool) -> _Run:
    """Check the store, build the model, loaders, optimiser and schedule (seeded)."""
    ds = open_patches(store)
    legend = legend_of(ds)
    bands = [str(b) for b in ds["band"].values]
    splits = np.asarray(ds["split"].values, dtype=object)
    if not (splits == "train").any():
        raise InvalidInputError(
            f"{store}: the training split is empty. Fix: sample with a larger train fraction."
        )
    patch = int(ds.attrs["patch"])
    cfg = cfg.resolved(patch=patch)
    log.info("U-Net preset %s: %s", cfg.preset, {k: getattr(cfg, k) for k in PRESETS[cfg.preset]})
    mcfg = UNetConfig(
        in_channels=len(bands),
        n_classes=legend.n_classes,
        depth=cfg.depth,
        base=cfg.base,
        norm=cfg.norm,
        dropout=cfg.dropout,
    )
    if patch % mcfg.multiple:
        raise InvalidInputError(
            f"{store}: patches of {patch} pixels are not divisible by 2 ** depth = {mcfg.multiple}. "
            "Fix: lower depth or sample other patch sizes."
        )
    w = world()
    if not resume and w.main:  # every file of the run obeys the same rule as the checkpoint
        for path in (out, *history_paths(out)):
            check_output(path, overwrite=overwrite)
    device = pick_device(cfg.device)
    if w.active and device.type == "cuda":  # one GPU per process
        device = torch.device("cuda", w.local_rank)
        torch.cuda.set_device(device)
    if cfg.sync_bn and device.type != "cuda":
        raise InvalidInputError(
            "--sync-bn: PyTorch's SyncBatchNorm runs on CUDA only. Fix: on CPUs use a larger "
            "--batch-size, or --norm group (no batch statistics)."
        )
    setup(w, device.type, cfg.dist_timeout)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(cfg.seed)
    model: Any = UNet(mcfg).to(device)
    if w.active:
        from torch.nn.parallel import DistributedDataParallel

        if cfg.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    loader = functools.partial(
        make_loader,
        store,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        num_workers=cfg.loader_workers,
        rank=w.rank,
        world=w.size,
    )
    train_loader = loader(split="train", augment=cfg.augment, pin_memory=device.type == "cuda")
    val_loader = loader(split="val") if (splits == "val").any() else None
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
    payload = {
        "model_config": mcfg.to_dict(),
        "bands": bands,
        "band_mean": [float(v) for v in ds.attrs["band_mean"]],
        "band_std": [float(v) for v in ds.attrs["band_std"]],
        "legend": legend.to_dict(),
        "patch": patch,
        "train_config": cfg.to_dict(),
        "store": str(store),
        "world_size": w.size,
    }
    amp = cfg.amp and device.type == "cuda"
    return _Run(
        cfg,
        store,
        out,
        legend,
        device,
        amp,
        model,
        train_loader,
        val_loader,
        opt,
        sched,
        weight.to(device) if weight is not None else None,
        payload,
        w,
    )


def _restore(run: _Run) -> None:
    """Continue from ``<out stem>.last.pt``: weights, optimiser, schedule, RNG and history."""
    last = run.paths[0]
    if not product_exists(last):
        raise InputFileNotFoundError(f"{last}: nothing to resume from. Fix: train without --resume.")
    state = load_checkpoint(last)
    check_compatible(state, bands=run.payload["bands"], legend=run.legend, source=str(last))
    if state["model_config"] != run.payload["model_config"]:
        raise CheckpointError(f"{last}: the model configuration differs from this run's.")
    _net(run.model).load_state_dict(state["model_state"])
    run.opt.load_state_dict(state["optimizer_state"])
    run.sched.load_state_dict(state["scheduler_state"])
    torch.set_rng_state(state["rng_state"])
    run.history, run.start = list(state["history"]), int(state["epoch"])
    run.best, run.stale = float(state["best_miou"]), int(state["stale_epochs"])
    before = int(state.get("world_size", 1))
    if before != run.world.size and run.world.main:
        print(
            f"resuming after epoch {run.start} on {run.world.size} process(es); the epochs so far ran "
            f"on {before}. The global batch ({run.cfg.batch_size}), the patch order and the schedule are "
            "the same, so the run goes on as it would have; only float sums differ in order (and, with "
            f"batch norm, each process's batch statistics cover {run.cfg.batch_size // run.world.size} "
            f"instead of {run.cfg.batch_size // before} patches).",
            file=sys.stderr,
        )


def _net(model: Any) -> Any:
    """The U-Net inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


def _train_epoch(run: _Run, epoch: int, progress: bool) -> dict[str, Any]:
    """One pass over the training split; loss, learning rate, speed and the data-wait share."""
    model, cfg, device = run.model, run.cfg, run.device
    model.train()
    run.train_loader.sampler.set_epoch(epoch)
    bar = _progress(len(run.train_loader), f"epoch {epoch + 1}/{cfg.epochs}", progress)
    total_loss, n_batches, wait, busy, images = torch.zeros((), device=device), 0, 0.0, 0.0, 0
    t_epoch = t0 = time.perf_counter()
    for x, y in _prefetch(run.train_loader, device):
        t1 = time.perf_counter()
        wait += t1 - t0
        if run.amp:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(x)
        else:
            logits = model(x)
        loss = loss_fn(logits, y, weight=run.weight, dice=cfg.dice)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        run.sched.step()
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
    mine = (float(total_loss) / max(n_batches, 1), images / max(time.perf_counter() - t_epoch, 1e-9))
    every = all_gather(run.world, (*mine, wait / max(wait + busy, 1e-9)))
    return {
        "epoch": epoch + 1,
        "train_loss": float(np.mean([e[0] for e in every])),  # the mean of the processes' mean losses
        "lr": float(run.opt.param_groups[0]["lr"]),
        "images_per_s": float(sum(e[1] for e in every)),  # all processes together
        "data_wait_frac": float(np.mean([e[2] for e in every])),
    }


def _validate(run: _Run) -> dict[str, Any]:
    """Accuracy on the validation split (nothing when the store has none)."""
    if run.val_loader is None:
        return {}
    cm = evaluate_loader(
        _net(run.model), run.val_loader, run.legend.n_classes, run.device, amp=run.amp, world=run.world
    )
    rep = accuracy_report(cm, run.legend)
    return {
        "val_overall_accuracy": rep["overall_accuracy"],
        "val_kappa": rep["kappa"],
        "val_mean_iou": rep["mean_iou"],
    }


def _record(run: _Run, row: dict[str, Any]) -> bool:
    """Append the epoch to the history; whether it is the best so far (early-stopping count)."""
    if run.val_loader is not None:
        score = row["val_mean_iou"] if row["val_mean_iou"] is not None else -1.0
    else:
        score = -row["train_loss"]
    run.history.append(row)
    if score > run.best:
        run.best, run.stale = score, 0
        return True
    run.stale += 1
    return run.cfg.select == "last"  # the last epoch is kept whatever it scored


def _print_epoch(run: _Run, row: dict[str, Any], improved: bool) -> None:
    epochs, epoch = run.cfg.epochs, row["epoch"]
    vm = row.get("val_mean_iou")
    print(
        f"epoch {epoch:>3}/{epochs}  loss {row['train_loss']:.4f}  "
        f"val mIoU {'-' if vm is None else f'{vm:.3f}'}  "
        f"val OA {row.get('val_overall_accuracy') or 0:.3f}  {row['images_per_s']:.1f} img/s  "
        f"data wait {100 * row['data_wait_frac']:.1f} %  "
        f"ETA {row['seconds'] * (epochs - epoch):.0f} s" + ("  *best*" if improved else ""),
        file=sys.stderr,
    )


def _save_epoch(run: _Run, epoch: int, improved: bool) -> None:
    """The best checkpoint (if improved), the last one with the state to resume, the history;
    written by rank 0 alone, the other processes waiting until the epoch's set is committed."""
    if not run.world.main:
        barrier(run.world)
        return
    last, hist_csv, hist_json = run.paths
    weights = {k: v.detach().cpu() for k, v in _net(run.model).state_dict().items()}
    payload = run.payload | {
        "model_state": weights,
        "history": run.history,
        "epoch": epoch + 1,
        "best_miou": float(run.best),
    }
    if improved:
        save_checkpoint(run.out, payload)
    resume_state = {
        "optimizer_state": run.opt.state_dict(),
        "scheduler_state": run.sched.state_dict(),
        "rng_state": torch.get_rng_state(),
        "stale_epochs": run.stale,
    }
    save_checkpoint(last, payload | resume_state)
    write_atomic(
        hist_csv, lambda tmp: pd.DataFrame(run.history).to_csv(tmp, index=False, float_format="%.6g")
    )
    write_text(hist_json, json.dumps(run.history, indent=2))
    commit_so_far()  # each epoch's files are one set: a killed run resumes from its last whole epoch
    barrier(run.world)


def _split_logits(
    model: Any, store: Any, ckpt: dict[str, Any], split: str, device: Any, samples: dict, batch_size: int = 32
) -> np.ndarray:
    """The confusion matrix of ``split`` and, in ``samples``, the logits of up to
    :data:`CALIBRATION_PIXELS` of its pixels (each once)."""
    n = legend_of(ckpt).n_classes
    loader = make_loader(
        store, split=split, batch_size=batch_size, shuffle=False, augment=False, stats=band_stats_of(ckpt)
    )
    share = logit_share(open_patches(store), split)
    return evaluate_loader(model, loader, n, device, samples=samples, logit_share=share)


def calibrate_checkpoint(
    checkpoint: str | os.PathLike, store: str | os.PathLike, *, split: str = "val", device: Any = "auto"
) -> dict[str, Any]:
    """Fit the checkpoint's temperature on ``split``'s pixels (each once, at most
    :data:`CALIBRATION_PIXELS`) and store it, with the reliability before and after, as the
    checkpoint's ``calibration``; ``predict`` applies it. Returns that record."""
    ckpt = load_checkpoint(checkpoint)
    dev = device if isinstance(device, torch.device) else pick_device(device)
    model = load_model(ckpt, dev)
    samples: dict[str, Any] = {}
    _split_logits(model, store, ckpt, split, dev, samples)
    if "logits" not in samples:
        raise InvalidInputError(f"{store}: the {split} split holds no labelled pixel to calibrate on.")
    record = calibration_record(samples["logits"], samples["logit_ref"].astype(np.int64) - 1, fitted_on=split)
    log.info(
        "temperature %.3f: validation ECE %.4f -> %.4f",
        record["temperature"],
        record["before"]["ece"],
        record["after"]["ece"],
    )
    save_checkpoint(checkpoint, ckpt | {"calibration": record})
    return record


def evaluate_store(
    store: str | Path,
    checkpoint: str | Path,
    *,
    split: str = "test",
    device: str = "auto",
    batch_size: int = 32,
    samples: dict | None = None,
) -> dict[str, Any]:
    """Accuracy of a checkpoint on one split of a patch store (labelled, valid pixels only).

    Inputs are normalised with the statistics the model was trained with, not the store's own.
    ``samples`` (a dict) receives every scored pixel once: ``key`` (row << 32 | col), ``ref``
    and ``pred`` (training ids), to compare models pixel by pixel.
    """
    ds = open_patches(store)
    legend = legend_of(ds)
    ckpt = load_checkpoint(checkpoint)
    check_compatible(ckpt, bands=[str(b) for b in ds["band"].values], legend=legend, source=str(checkpoint))
    dev = pick_device(device)
    model = load_model(ckpt, dev)
    pixels: dict[str, Any] = {}
    report = accuracy_report(_split_logits(model, store, ckpt, split, dev, pixels, batch_size), legend)
    if samples is not None:
        samples |= {k: pixels[k] for k in ("key", "ref", "pred") if k in pixels}
    if "logits" in pixels:
        report["calibration"] = held_out_calibration(ckpt, pixels["logits"], pixels["logit_ref"], split)
    report["source"] = {
        "patches": str(store),
        "split": split,
        "model": str(checkpoint),
        "patches_evaluated": int((np.array([str(s) for s in ds["split"].values]) == split).sum()),
    }
    return report


def held_out_calibration(
    ckpt: dict[str, Any], logits: np.ndarray, ref: np.ndarray, split: str, ids: Any = None
) -> dict[str, Any]:
    """The reliability on held-out pixels (``ref``: training ids; ``ids``: those of ``logits``'
    columns, default 1..K) without and with the checkpoint's temperature (1.0, the model as
    trained, when it has none): what ``evaluate`` reports."""
    temp = temperature_of(ckpt)
    cols = np.arange(1, logits.shape[1] + 1) if ids is None else np.asarray(ids)
    fitted = (ckpt.get("calibration") or {}).get("fitted_on") or ""
    out = calibration_record(logits, columns_of(np.asarray(ref), cols), temperature=temp, fitted_on=fitted)
    return out | {"evaluated_on": split}
