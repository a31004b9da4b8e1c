"""Whole-scene prediction: a lazy class map on the cube's grid, chunk by chunk, without seams.

Each output chunk is predicted from a window that adds a margin of at least half the U-Net's
receptive field on every side, with the window's origin on the global ``2 ** depth`` pooling
grid. Every pixel of the chunk then sees exactly the input it would see in a one-piece
prediction of the whole scene, so its logits are the same (bit for bit on the CPU): there is
no seam to blend away, and the map does not depend on the chunking or the scheduler. Scene
edges are zero-padded (in normalised units) to the next multiple of ``2 ** depth``, as in a
one-piece prediction. The model is loaded once per worker process and reused by its tasks.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import torch
import xarray as xr

from ._chunks import Region, Regions
from .checkpoint import band_stats_of, check_compatible, load_checkpoint, load_model, normalize
from .cube import consolidated
from .errors import InputFileNotFoundError, InvalidInputError
from .io import open_raster
from .legend import Legend
from .model import UNetConfig, pick_device
from .preprocess import remap_labels

__all__ = ["margin_for", "open_class_map", "open_prediction", "predict_scene"]

log = logging.getLogger(__name__)

_MODELS: dict[tuple, Any] = {}
_MODELS_LOCK = threading.Lock()
_FORWARD_LOCK = threading.Lock()  # one forward pass at a time per process: torch uses every core
# On the CPU, one window in the forward pass and one being read is all that can make progress at
# once; more windows would only wait for the lock, each holding its input (~350 MB for 2272^2).
_CPU_WINDOWS = threading.BoundedSemaphore(2)


def margin_for(config: UNetConfig) -> int:
    """Context margin in pixels: half the receptive field, rounded up to the pooling grid."""
    m = config.multiple
    return -(-(config.receptive_field // 2) // m) * m


def _model(checkpoint: str, device: str):
    """The checkpoint's model on ``device``, loaded once per process (keyed by path and mtime)."""
    key = (checkpoint, Path(checkpoint).stat().st_mtime_ns, device)
    with _MODELS_LOCK:
        if key not in _MODELS:
            ckpt = load_checkpoint(checkpoint)
            dev = pick_device(device)
            _MODELS[key] = (load_model(ckpt, dev), dev, ckpt)
            log.info("loaded %s on %s", checkpoint, dev)
        return _MODELS[key]


def _predict_window(
    image: Region,
    valid: Region,
    window: tuple[int, int, int, int],
    core: tuple[int, int, int, int],
    checkpoint: str,
    device: str,
    probabilities: bool,
) -> np.ndarray:
    """Classes, confidence (and probabilities) of one chunk; rows of the result are stacked."""
    model, dev, ckpt = _model(checkpoint, device)
    with _CPU_WINDOWS if dev.type == "cpu" else contextlib.nullcontext():
        return _window_layers(model, dev, ckpt, image, valid, window, core, probabilities)


def _window_layers(
    model: Any,
    dev: Any,
    ckpt: dict,
    image: Region,
    valid: Region,
    window: tuple[int, int, int, int],
    core: tuple[int, int, int, int],
    probabilities: bool,
) -> np.ndarray:
    mult = UNetConfig.from_dict(ckpt["model_config"]).multiple
    img = image.read()
    ok = valid.read().astype(bool, copy=False)
    x = img.astype(np.float32, copy=not (img.flags.writeable and img.base is None))  # ours to change
    normalize(x, ok, *band_stats_of(ckpt))
    del img
    wy0, wy1, wx0, wx1 = window
    h, w = wy1 - wy0, wx1 - wx0
    ph, pw = -(-h // mult) * mult - h, -(-w // mult) * mult - w  # to the pooling grid, at the end
    x = np.pad(x, ((0, 0), (0, ph), (0, pw)))
    cy0, cy1, cx0, cx1 = core
    sy, sx = slice(cy0 - wy0, cy1 - wy0), slice(cx0 - wx0, cx1 - wx0)
    with _FORWARD_LOCK, torch.inference_mode():
        t = torch.from_numpy(x[None]).to(dev)
        if dev.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(t)[0, :, sy, sx].float()
        else:
            logits = model(t)[0, :, sy, sx]
        del t
        top, idx = logits.max(0)  # softmax only where needed: on the core, and via the max
        if probabilities:
            prob = logits.softmax(0)
            p_all = prob.cpu().numpy()
            conf = prob.max(0).values.cpu().numpy()
        else:
            conf = (1.0 / torch.exp(logits - top).sum(0)).cpu().numpy()
        cls = (idx + 1).to(torch.uint8).cpu().numpy()
    okc = ok[sy, sx]
    layers = [np.where(okc, cls, 0).astype(np.float32)[None], np.where(okc, conf, 0).astype(np.float32)[None]]
    if probabilities:
        layers.append(np.where(okc[None], p_all, 0).astype(np.float32))
    return np.concatenate(layers)


def predict_scene(
    cube: xr.Dataset,
    checkpoint: str | Path,
    *,
    chunk: int | None = None,
    device: str = "auto",
    probabilities: bool = False,
) -> xr.Dataset:
    """Predict a whole cube lazily; nothing is computed until the result is.

    Parameters
    ----------
    cube
        An analysis-ready cube (:func:`kerinci_xr.cube.open_cube`) holding the checkpoint's bands.
    checkpoint
        Path of a checkpoint written by :func:`kerinci_xr.training.fit`.
    chunk
        Edge of the output chunks in pixels (rounded up to the pooling grid). The default,
        2048, keeps the margin's extra work at 23 % for a depth-4 U-Net; smaller chunks use
        less memory per task.
    device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``...
    probabilities
        Also return ``probabilities`` (class, y, x) float32.

    Returns
    -------
    xarray.Dataset
        ``classes`` (y, x) uint8 training ids, 0 where the imagery is invalid; ``confidence``
        (y, x) float32, the winning class's probability; optionally ``probabilities``; CRS,
        legend and provenance in attrs.
    """
    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    bands = [str(b) for b in ckpt["bands"]]
    have = [str(b) for b in cube["band"].values]
    missing = [b for b in bands if b not in have]
    if missing:
        raise InvalidInputError(
            f"{checkpoint}: the model needs bands {missing} that the cube lacks (it has {have}). "
            "Fix: prepare the cube with those bands, or use a model trained on these."
        )
    legend = Legend.from_dict(ckpt["legend"])
    if cube.attrs.get("legend"):
        check_compatible(
            ckpt, bands=bands, legend=Legend.from_json(cube.attrs["legend"]), source=str(checkpoint)
        )
    config = UNetConfig.from_dict(ckpt["model_config"])
    mult, margin = config.multiple, margin_for(config)
    chunk = -(-(chunk or 2048) // mult) * mult
    height, width = cube.sizes["y"], cube.sizes["x"]
    image = cube["image"].sel(band=bands).data
    image = image if isinstance(image, da.Array) else da.from_array(image)
    valid = cube["valid"].data
    valid = valid if isinstance(valid, da.Array) else da.from_array(valid)
    # each window reads its own region inside its task: shared chunk tasks would stay in memory
    # until every window around them is done, a band of chunks as wide as the scene
    image_regions, valid_regions = Regions(image), Regions(valid)
    nlayers = 2 + (legend.n_classes if probabilities else 0)
    ybounds = [*range(0, height, chunk), height]
    xbounds = [*range(0, width, chunk), width]
    rows = []
    for r0, r1 in itertools.pairwise(ybounds):
        row = []
        for c0, c1 in itertools.pairwise(xbounds):
            wy0, wy1 = max(int(r0) - margin, 0), min(int(r1) + margin, height)
            wx0, wx1 = max(int(c0) - margin, 0), min(int(c1) + margin, width)
            win = (slice(wy0, wy1), slice(wx0, wx1))
            task = dask.delayed(_predict_window, pure=True)(
                image_regions.region(*win),
                valid_regions.region(*win),
                (wy0, wy1, wx0, wx1),
                (int(r0), int(r1), int(c0), int(c1)),
                str(checkpoint.resolve()),
                device,
                probabilities,
            )
            row.append(da.from_delayed(task, shape=(nlayers, int(r1 - r0), int(c1 - c0)), dtype=np.float32))
        rows.append(row)
    stack = da.block(rows)
    coords = {"y": cube["y"].values, "x": cube["x"].values}
    out = xr.Dataset(
        {
            "classes": (("y", "x"), stack[0].astype(np.uint8)),
            "confidence": (("y", "x"), stack[1]),
        },
        coords=coords,
    )
    if probabilities:
        out["probabilities"] = (("class_id", "y", "x"), stack[2:])
        out["probabilities"].attrs = {"long_name": "probability of each class", "units": "1"}
        out = out.assign_coords(class_id=np.arange(1, legend.n_classes + 1))
    out["classes"].attrs = legend.cf_attrs("predicted land-cover class (training id)")
    out["confidence"].attrs = {"long_name": "probability of the predicted class", "units": "1"}
    out = out.rio.write_crs(cube.rio.crs).rio.write_transform(cube.rio.transform())
    out.attrs = {
        "title": "kerinci_xr prediction",
        "legend": legend.to_json(),
        "model": str(checkpoint),
        "margin": margin,
        "chunk": chunk,
    }
    return out


def open_prediction(path: str | Path, *, date: str | None = None, all_dates: bool = False) -> xr.Dataset:
    """Reopen a prediction store (``kerinci-xr predict`` output) lazily; checks it is one.

    A store of several dates (``predict --all-dates``) gives the map of ``date`` (default: the
    labels' date it records), or every date with ``all_dates=True``.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileNotFoundError(f"{path}: prediction not found. Fix: run `kerinci-xr predict` first.")
    ds = xr.open_zarr(path, consolidated=consolidated(path), decode_coords="all")
    if "classes" not in ds:
        raise InvalidInputError(f"{path}: expected a prediction store with a 'classes' variable.")
    ds["classes"].attrs["legend"] = ds.attrs.get("legend", "")
    if "time" in ds.dims and not all_dates:
        dates = [str(t)[:10] for t in ds["time"].values]
        pick = date or ds.attrs.get("labels_date") or None
        if pick not in dates:
            raise InvalidInputError(
                f"{path}: a prediction of the dates {dates}; choose one of them (--date)."
            )
        ds = ds.sel(time=pick, drop=True)
        ds["classes"].attrs["legend"] = ds.attrs.get("legend", "")
    elif date is not None and "time" not in ds.dims:
        raise InvalidInputError(f"{path}: a prediction of one date: --date does not apply.")
    return ds


def open_class_map(
    path: str | Path, *, date: str | None = None, all_dates: bool = False
) -> tuple[xr.DataArray, Legend]:
    """A class map of training ids and its legend: a prediction store, the COG ``predict`` writes,
    or a change store (its transitions as classes: ids 1..K of the transitions' legend)."""
    path = Path(path)
    if path.is_dir() and (path / "transition").exists():
        codes = xr.open_zarr(path, consolidated=consolidated(path), decode_coords="all")["transition"]
        tl = Legend.from_json(codes.attrs["transition_legend"], source=str(path))
        ids = remap_labels(codes, tl)  # transition codes -> ids 1..K, as label codes are remapped
        return ids.rio.write_crs(codes.rio.crs).rio.write_transform(codes.rio.transform()), tl
    if path.is_dir():
        pred = open_prediction(path, date=date, all_dates=all_dates)["classes"]
        return pred, Legend.from_json(pred.attrs["legend"], source=str(path))
    import rasterio

    classes = open_raster(path).isel(band=0, drop=True)
    with rasterio.open(path) as src:
        text = src.tags().get("LEGEND")
    if not text:
        raise InvalidInputError(
            f"{path}: expected a class map written by kerinci-xr predict (a LEGEND tag), found none. "
            "Fix: pass the prediction store (.zarr) or the COG predict wrote."
        )
    return classes, Legend.from_json(text, source=str(path))
