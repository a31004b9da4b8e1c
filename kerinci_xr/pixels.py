"""Per-pixel models beside the U-Net: features of each pixel, LightGBM trained on the labelled
pixels of a sample's training area, and whole-scene prediction chunk by chunk.

The usual first map of a land-cover study is a per-pixel classifier on the bands and a few
indices (the Google Earth Engine habit; sits' ``sits_train(rfor/lightgbm)``). Here it is
LightGBM's gradient boosting (``"lightgbm"``) or its random-forest mode (``"rf"``), trained on the
same sample the U-Net trains on (the patch store's split layout over its cube), so the two can be
compared on identical folds. A :class:`FeatureRecipe` (bands, spectral indices, neighbourhood
mean and standard deviation) drives training and prediction alike and is stored in the
checkpoint with the model as LightGBM's own text, never a pickle.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ._hashing import hash_u64
from ._locations import absolute, version
from .calibration import MAP_LAYERS, fill_layers, log_probabilities, softmax
from .checkpoint import load_checkpoint, temperature_of
from .cluster import LOG_EVERY_S
from .errors import CheckpointError, InvalidInputError
from .legend import Legend
from .patches import window_pixels  # (re-exported: the pixels the U-Net is scored on)
from .preprocess import spectral_index
from .sampling import SPLITS, SplitLayout

__all__ = [
    "PIXEL_MODELS",
    "FeatureRecipe",
    "PixelSample",
    "class_probabilities",
    "feature_stack",
    "fit_pixels",
    "labelled_pixels",
    "pixel_probabilities",
    "pixel_sample",
    "predict_pixels",
    "score_pixels",
    "window_pixels",
]

PixelModel = Literal["lightgbm", "rf"]
#: The per-pixel model kinds: LightGBM's gradient boosting and its random-forest mode.
PIXEL_MODELS: tuple[str, ...] = ("lightgbm", "rf")
INDICES = ("ndvi", "ndwi", "nbr")


@dataclass(frozen=True)
class FeatureRecipe:
    """What a per-pixel model sees of each pixel: ``bands`` (their values), ``indices`` (NDVI,
    NDWI, NBR from the cube's band roles) and, for each edge in ``windows`` (3, 5), every band's
    mean and standard deviation over the ``w x w`` neighbourhood (valid pixels only)."""

    bands: tuple[str, ...]
    roles: Mapping[str, str] = field(default_factory=dict)
    indices: tuple[str, ...] = ()
    windows: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        bad = [i for i in self.indices if i not in INDICES]
        if bad:
            raise InvalidInputError(f"indices: expected some of {list(INDICES)}, found {bad}.")
        if any(w < 3 or w % 2 == 0 for w in self.windows):
            raise InvalidInputError(
                f"windows: expected odd edges of at least 3 (3, 5), found {list(self.windows)}."
            )

    def names(self) -> list[str]:
        out = list(self.bands) + list(self.indices)
        for w in self.windows:
            out += [f"{b}_mean{w}" for b in self.bands] + [f"{b}_std{w}" for b in self.bands]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "bands": list(self.bands),
            "roles": dict(self.roles),
            "indices": list(self.indices),
            "windows": list(self.windows),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureRecipe:
        return cls(
            bands=tuple(d["bands"]),
            roles=dict(d.get("roles", {})),
            indices=tuple(d.get("indices", ())),
            windows=tuple(int(w) for w in d.get("windows", ())),
        )


def _neighbourhood(block: np.ndarray, ok: np.ndarray, w: int) -> np.ndarray:
    """The mean and standard deviation of each band over its ``w x w`` valid neighbours, for a
    block with its overlap that holds every band twice (the means go to the first half, the
    standard deviations to the second, from one pass of filters): ``scipy.ndimage``'s
    ``uniform_filter`` with ``mode="reflect"`` at the scene's edges, in float64."""
    from scipy import ndimage

    nb = block.shape[0] // 2
    mask = ok[0]
    n = ndimage.uniform_filter(mask.astype(np.float64), size=w, mode="reflect")
    out = np.empty(block.shape, dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        for i in range(nb):
            v = np.where(mask, block[i], 0.0).astype(np.float64)
            mean = np.where(n > 0, ndimage.uniform_filter(v, size=w, mode="reflect") / n, np.nan)
            square = np.where(n > 0, ndimage.uniform_filter(v * v, size=w, mode="reflect") / n, np.nan)
            out[i] = mean
            out[nb + i] = np.sqrt(np.maximum(square - mean * mean, 0.0))
    return out


def feature_stack(image: xr.DataArray, valid: xr.DataArray, recipe: FeatureRecipe) -> xr.DataArray:
    """The features of every pixel, lazily: ``(feature, y, x)`` float32 (NaN where invalid).

    Neighbourhood statistics are computed per chunk with an overlap of ``w // 2`` pixels
    (``dask.array.map_overlap``), so they equal a one-piece computation at chunk edges.
    """
    missing = [b for b in recipe.bands if b not in [str(v) for v in image["band"].values]]
    if missing:
        raise InvalidInputError(
            f"the model needs bands {missing} that the cube lacks (it has {list(image['band'].values)}). "
            "Fix: prepare the cube with those bands, or train on these."
        )
    img = image.sel(band=list(recipe.bands)).transpose("band", "y", "x")
    parts = [img.data.astype(np.float32)]
    for name in recipe.indices:
        parts.append(spectral_index(img, name, roles=recipe.roles).data[None].astype(np.float32))
    ok = valid.data
    bands = img.data.astype(np.float32)
    twice = da.concatenate([bands, bands], axis=0).rechunk({0: -1})  # room for means and stds
    for w in recipe.windows:
        parts.append(
            da.map_overlap(
                _neighbourhood,
                twice,
                ok[None],
                depth={0: 0, 1: w // 2, 2: w // 2},
                boundary="none",
                dtype=np.float32,
                w=w,
            )
        )
    data = da.concatenate(parts, axis=0).rechunk({0: -1})
    data = da.where(ok[None], data, np.float32(np.nan))
    return xr.DataArray(
        data, dims=("feature", "y", "x"), coords={"feature": recipe.names(), "y": image["y"], "x": image["x"]}
    )


@dataclass
class PixelSample:
    """Labelled pixels of one split: features ``x`` (pixel, feature), training ids ``y``, and
    where they lie (global ``rows``, ``cols``)."""

    x: np.ndarray
    y: np.ndarray
    rows: np.ndarray
    cols: np.ndarray


def _chunk_pixels(feats, labels, valid, split, rows0: int, cols0: int, want: int):
    keep = (labels > 0) & valid & (split == want) & np.isfinite(feats).all(axis=0)
    r, c = np.nonzero(keep)
    return feats[:, r, c].T.copy(), labels[r, c].astype(np.uint8), r + rows0, c + cols0


def pixel_sample(
    view: xr.Dataset,
    layout: SplitLayout,
    recipe: FeatureRecipe,
    *,
    split: str = "train",
    max_per_class: int | None = 20_000,
    seed: int = 0,
) -> PixelSample:
    """The labelled, valid pixels of ``split``'s area with their features, one dask task per
    chunk; with ``max_per_class``, at most that many per class, chosen by a hash of the pixel's
    position and ``seed`` (the same pixels whatever the chunking), in row-major order."""
    feats = feature_stack(view["image"], view["valid"], recipe)
    labels, valid = view["labels"].data, view["valid"].data
    want = SPLITS.index(split)
    ys, xs = np.cumsum((0, *labels.chunks[0])), np.cumsum((0, *labels.chunks[1]))
    tasks = []
    fb = feats.data.to_delayed().reshape(len(ys) - 1, len(xs) - 1)
    lb, vb = labels.to_delayed(), valid.to_delayed()
    for i in range(len(ys) - 1):
        for j in range(len(xs) - 1):
            smap = layout.split_map(slice(int(ys[i]), int(ys[i + 1])), slice(int(xs[j]), int(xs[j + 1])))
            tasks.append(
                dask.delayed(_chunk_pixels)(fb[i, j], lb[i, j], vb[i, j], smap, int(ys[i]), int(xs[j]), want)
            )
    parts = dask.compute(*tasks)
    x = np.concatenate([p[0] for p in parts]) if parts else np.empty((0, len(recipe.names())), np.float32)
    y = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, np.uint8)
    rows = np.concatenate([p[2] for p in parts]) if parts else np.empty(0, np.int64)
    cols = np.concatenate([p[3] for p in parts]) if parts else np.empty(0, np.int64)
    order = np.lexsort((cols, rows))
    x, y, rows, cols = x[order], y[order], rows[order], cols[order]
    if max_per_class is not None:
        h = hash_u64(rows, cols, seed)
        keep = np.zeros(y.size, dtype=bool)
        for k in np.unique(y):
            idx = np.flatnonzero(y == k)
            keep[idx[np.argsort(h[idx], kind="stable")[:max_per_class]]] = True
        x, y, rows, cols = x[keep], y[keep], rows[keep], cols[keep]
    return PixelSample(x, y, rows, cols)


def _params(kind: str, n_features: int, n_classes: int, seed: int, threads: int) -> dict[str, Any]:
    common = {
        "objective": "multiclass",
        "num_class": n_classes,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": threads,
        "verbosity": -1,
        "min_data_in_leaf": 5,
    }
    if kind == "rf":  # LightGBM's random forest: bagged full trees on a third of the features each
        frac = max(1.0 / n_features, min(1.0, np.sqrt(n_features) / n_features))
        return common | {
            "boosting_type": "rf",
            "bagging_fraction": 0.632,
            "bagging_freq": 1,
            "feature_fraction": float(frac),
            "num_leaves": 255,
        }
    return common | {"learning_rate": 0.05, "num_leaves": 31, "feature_fraction": 0.9}


def fit_pixels(
    train: PixelSample,
    *,
    kind: PixelModel = "lightgbm",
    rounds: int = 300,
    seed: int = 0,
    threads: int = 0,
    val: PixelSample | None = None,
    progress: bool = False,
) -> tuple[str, list[int], dict[str, Any]]:
    """Train a LightGBM model (``kind``: gradient boosting, or ``"rf"``, its random-forest mode)
    on labelled pixels; returns the model as LightGBM's text, the training ids it knows (in
    its output order) and what the training measured (time, pixels, validation accuracy).
    ``progress``: a line on stderr every :data:`~kerinci_xr.cluster.LOG_EVERY_S` seconds (the
    round, the time spent and the time left)."""
    import lightgbm as lgb

    if kind not in PIXEL_MODELS:
        raise InvalidInputError(f"model: expected one of {list(PIXEL_MODELS)}, found {kind!r}.")
    classes = sorted(int(k) for k in np.unique(train.y))
    if len(classes) < 2:
        raise InvalidInputError(
            f"the training area holds labelled pixels of {len(classes)} class(es); a classifier needs two "
            "or more. Fix: sample with more per class, or a larger training fraction."
        )
    index = {k: i for i, k in enumerate(classes)}
    target = np.array([index[int(k)] for k in train.y])
    t0 = time.perf_counter()
    params = _params(kind, train.x.shape[1], len(classes), seed, threads)
    booster = lgb.train(
        params,
        lgb.Dataset(train.x, label=target, free_raw_data=True),
        num_boost_round=rounds,
        callbacks=[_round_lines(kind, rounds)] if progress else None,
    )
    info: dict[str, Any] = {
        "train_seconds": round(time.perf_counter() - t0, 3),
        "train_pixels": int(train.y.size),
        "rounds": rounds,
    }
    if val is not None and val.y.size:
        pred = np.asarray(classes)[np.asarray(booster.predict(val.x)).argmax(axis=1)]
        info |= {"val_pixels": int(val.y.size), "val_oa": float((pred == val.y).mean())}
    return booster.model_to_string(), classes, info


def _round_lines(kind: str, rounds: int) -> Callable[[Any], None]:
    """A LightGBM callback that prints where the training is, at most every LOG_EVERY_S seconds."""
    t0 = last = time.monotonic()

    def line(env: Any) -> None:
        nonlocal last
        now, done = time.monotonic(), env.iteration + 1
        if now - last >= LOG_EVERY_S:
            last = now
            left = (now - t0) / done * (rounds - done)
            print(
                f"{kind}: round {done}/{rounds}, {now - t0:.0f} s, about {left:.0f} s left",
                file=sys.stderr,
                flush=True,
            )

    return line


_BOOSTERS: dict[tuple, Any] = {}
_BOOSTERS_LOCK = threading.Lock()


def _booster(checkpoint: str, stamp: Any, text: str | None = None) -> Any:
    """The checkpoint's LightGBM model, parsed once per process (keyed by location and ``stamp``,
    the file's version read once where the graph is built, not once per chunk)."""
    import lightgbm as lgb

    key = (checkpoint, stamp)
    with _BOOSTERS_LOCK:
        if key not in _BOOSTERS:
            text = text if text is not None else load_checkpoint(checkpoint)["booster"]
            _BOOSTERS[key] = lgb.Booster(model_str=text)
        return _BOOSTERS[key]


def _predict_block(
    feats: np.ndarray,
    checkpoint: str,
    stamp: Any,
    classes: Sequence[int],
    n_classes: int,
    probs: bool,
    temperature: float = 1.0,
):
    nf, h, w = feats.shape
    x = feats.reshape(nf, -1).T
    ok = np.isfinite(x).all(axis=1)
    out = np.zeros((len(MAP_LAYERS) + (n_classes if probs else 0), h * w), dtype=np.float32)
    if ok.any():
        p = class_probabilities(_booster(checkpoint, stamp), x[ok], temperature, threads=1)
        part = np.empty((out.shape[0], p.shape[0]), dtype=np.float32)
        fill_layers(part, (slice(None),), p.T, np.asarray(classes), probs)
        out[:, ok] = part
    return out.reshape(-1, h, w)


def class_probabilities(
    booster: Any, x: np.ndarray, temperature: float = 1.0, threads: int = 0
) -> np.ndarray:
    """A LightGBM model's class probabilities (pixel, class), divided by ``temperature`` in the
    log domain (:mod:`.calibration`) when it is not 1."""
    p = np.asarray(booster.predict(x, num_threads=threads), dtype=np.float64)
    return (p if temperature == 1.0 else softmax(log_probabilities(p), temperature)).astype(np.float32)


def _labelled_part(labels: np.ndarray, valid: np.ndarray, rows0: int, cols0: int):
    r, c = np.nonzero(labels > 0)
    return r + rows0, c + cols0, labels[r, c].astype(np.uint8), valid[r, c].astype(bool)


def labelled_pixels(view: xr.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every labelled pixel of a cube, one task per chunk: global rows and columns (row-major),
    training ids, and whether the imagery is valid there (a label on nodata cannot be scored)."""
    labels, valid = view["labels"].data, view["valid"].data
    ys, xs = np.cumsum((0, *labels.chunks[0])), np.cumsum((0, *labels.chunks[1]))
    lb, vb = labels.to_delayed(), valid.to_delayed()
    tasks = [
        dask.delayed(_labelled_part)(lb[i, j], vb[i, j], int(ys[i]), int(xs[j]))
        for i in range(len(ys) - 1)
        for j in range(len(xs) - 1)
    ]
    parts = dask.compute(*tasks)
    rows, cols, ref, ok = (np.concatenate([p[k] for p in parts]) for k in range(4))
    order = np.lexsort((cols, rows))
    return rows[order].astype(np.int64), cols[order].astype(np.int64), ref[order], ok[order]


def _at(block: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return block[:, rows, cols].T


def pixel_probabilities(
    view: xr.Dataset, checkpoint: str, ckpt: Mapping[str, Any], rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A per-pixel model's class probabilities as trained (pixel, the model's classes) at
    scattered pixels of a cube, and where its features are valid (the other rows are 0). The
    features come from the whole scene, so neighbourhoods are those of the map; one read per
    chunk that holds any of the pixels."""
    recipe = FeatureRecipe.from_dict(ckpt["features"])
    feats = feature_stack(view["image"], view["valid"], recipe)
    ys, xs = np.cumsum((0, *feats.data.chunks[1])), np.cumsum((0, *feats.data.chunks[2]))
    bi = np.searchsorted(ys, rows, side="right") - 1
    bj = np.searchsorted(xs, cols, side="right") - 1
    blocks = feats.data.to_delayed().reshape(len(ys) - 1, len(xs) - 1)
    groups = sorted(set(zip(bi.tolist(), bj.tolist(), strict=True)))
    tasks = []
    for i, j in groups:
        sel = np.flatnonzero((bi == i) & (bj == j))
        tasks.append(dask.delayed(_at)(blocks[i, j], rows[sel] - ys[i], cols[sel] - xs[j]))
    parts = dask.compute(*tasks)
    x = np.empty((rows.size, len(recipe.names())), dtype=np.float32)
    for (i, j), part in zip(groups, parts, strict=True):
        x[np.flatnonzero((bi == i) & (bj == j))] = part
    ok = np.asarray(np.isfinite(x).all(axis=1))
    p: np.ndarray = np.zeros((rows.size, len(ckpt["classes"])), dtype=np.float32)
    if ok.any():
        p[ok] = class_probabilities(
            _booster(absolute(checkpoint), version(checkpoint), ckpt["booster"]), x[ok]
        )
    return p, ok


def score_pixels(
    view: xr.Dataset, checkpoint: str, ckpt: Mapping[str, Any], rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """A per-pixel model's classes (training ids; 0 where its features are invalid) at scattered
    pixels of a cube (:func:`pixel_probabilities`)."""
    p, ok = pixel_probabilities(view, checkpoint, ckpt, rows, cols)
    out = np.zeros(rows.size, dtype=np.uint8)
    out[ok] = np.asarray(ckpt["classes"])[p[ok].argmax(axis=1)]
    return out


def predict_pixels(
    view: xr.Dataset,
    checkpoint: str,
    ckpt: Mapping[str, Any],
    legend: Legend,
    *,
    chunk: int,
    probabilities: bool = False,
) -> da.Array:
    """The layers of a per-pixel model's map, lazily: ``(4 [+ n_classes], y, x)`` float32 holding
    :data:`~.calibration.MAP_LAYERS` (the class: training id, 0 where invalid; confidence, margin,
    entropy, with the checkpoint's temperature) and optionally every class's probability; one
    task per ``chunk`` x ``chunk`` piece, the same map for any chunking."""
    recipe = FeatureRecipe.from_dict(ckpt["features"])
    view = view.chunk({"y": chunk, "x": chunk})
    feats = feature_stack(view["image"], view["valid"], recipe).data
    stamp = version(checkpoint)
    try:
        _booster(absolute(checkpoint), stamp, ckpt["booster"])  # parsed here first: a bad model is named now
    except Exception as exc:  # LightGBM raises its own error for an unreadable model text
        raise CheckpointError(
            f"{checkpoint}: the LightGBM model in this checkpoint cannot be read ({str(exc)[:200]}). "
            "Fix: retrain, or restore the file the training wrote."
        ) from exc
    n = len(MAP_LAYERS) + (legend.n_classes if probabilities else 0)
    return feats.map_blocks(
        _predict_block,
        absolute(checkpoint),
        stamp,
        list(ckpt["classes"]),
        legend.n_classes,
        probabilities,
        temperature_of(dict(ckpt), str(checkpoint)),
        dtype=np.float32,
        chunks=((n,), *feats.chunks[1:]),
    )
