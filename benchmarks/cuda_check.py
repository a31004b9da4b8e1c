"""CUDA check: train a few epochs and predict a scene on the GPU, and compare with the CPU.

Not a timed benchmark: it proves that mixed-precision training and prediction run on CUDA and
that the GPU map agrees with the CPU map of the same checkpoint (bf16 autocast moves a few
near-tie pixels). Prints one JSON line.

    python benchmarks/cuda_check.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings
from pathlib import Path


def main() -> None:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    from kerinci_xr.api import prepare, sample
    from kerinci_xr.cube import open_cube
    from kerinci_xr.prediction import predict_scene
    from kerinci_xr.synthetic import make_kerinci_scene
    from kerinci_xr.training import TrainConfig, evaluate_store, fit

    root = Path(tempfile.mkdtemp())
    scene = make_kerinci_scene(root / "scene", height=1500, width=1500, seed=0)
    cube = prepare(
        scene.landsat,
        labels=scene.labels,
        legend=scene.legend,
        radar=scene.palsar,
        out=root / "cube.zarr",
        chunk=512,
    )["cube"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = sample(cube, out=root / "p.zarr", per_class=20, patch=128)["patches"]
    t0 = time.perf_counter()
    res = fit(store, root / "m.pt", config=TrainConfig(epochs=8, depth=4, base=32, device="cuda"))
    train_s = time.perf_counter() - t0
    rep = evaluate_store(store, res["best"], device="cuda")
    ds = open_cube(cube)
    t0 = time.perf_counter()
    gpu = predict_scene(ds, res["best"], device="cuda")["classes"].values
    gpu_s = time.perf_counter() - t0
    cpu = predict_scene(ds, res["best"], device="cpu", chunk=512)["classes"].values
    out = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "train_seconds_8_epochs": round(train_s, 1),
        "last_epoch": res["history"][-1],
        "test_overall_accuracy": rep["overall_accuracy"],
        "test_mean_iou": rep["mean_iou"],
        "predict_seconds_1500x1500": round(gpu_s, 2),
        "gpu_cpu_agreement": float((gpu == cpu).mean()),
    }
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
