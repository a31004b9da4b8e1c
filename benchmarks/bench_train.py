"""Training throughput: images/s and the fraction of each step spent waiting for data.

The project's loader (cached patch store, one zarr call per batch at most) feeds fit(); the
baseline feeds the same model and loop from xbatcher's torch MapDataset over a plain
BatchGenerator on the store opened lazily with xarray.open_zarr. On the CPU, and on CUDA when
one is present. Target: data wait under 5 % of step time with the project's loader.

    python benchmarks/bench_train.py [--device auto] [--batch-size 16] [--epochs 2]

With ``--nproc 1,2`` it measures distributed training instead: ``kerinci-xr train`` under
``torchrun --nproc_per_node N`` for each N (the same global batch; on the CPU each process gets
cores / N threads, gloo; on CUDA one GPU per process, NCCL), samples/s of all processes together
(after the first epoch), the data-wait share, and the scaling efficiency against one process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORK, cube, peak_rss_mb, run_child, save


def store_path(size: int = 4000, per_class: int = 30) -> Path:
    path = WORK / f"patches_train_{size}_{per_class}.zarr"
    if not path.exists():
        from kerinci_xr.api import sample

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # blocks of 256: a validation area even on the smoke test's 384-pixel scene
            sample(
                cube(size),
                out=path,
                per_class=per_class,
                patch=128,
                block=256,
                seed=0,
                fractions=(0.85, 0.15, 0.0),
            )
    return path


def child(case: str, device: str, batch: int, epochs: int, size: int, per_class: int) -> dict:
    import torch

    from kerinci_xr.model import pick_device
    from kerinci_xr.training import TrainConfig, fit, loss_fn

    dev = pick_device(device)
    out: dict = {"case": case, "device": str(dev), "batch_size": batch}
    if case == "project":
        target = WORK / f"bench_model_{dev.type}.pt"
        res = fit(
            store_path(size, per_class),
            target,
            config=TrainConfig(epochs=epochs, batch_size=batch, device=device),
            overwrite=True,
        )
        last = res["history"][-1]  # the first epoch includes the cache fill and warm-up
        out |= {
            "images_per_s": last["images_per_s"],
            "data_wait_frac": last["data_wait_frac"],
            "epochs": len(res["history"]),
        }
    else:
        import xarray as xr
        import xbatcher
        from xbatcher.loaders.torch import MapDataset

        from kerinci_xr.model import UNetConfig, build_unet

        ds = xr.open_zarr(store_path(size, per_class), consolidated=False)
        ds = ds.isel(patch=ds["split"].values == "train")
        dims = {"band": ds.sizes["band"], "y": 128, "x": 128}
        xg = xbatcher.BatchGenerator(ds["image"].fillna(0), input_dims=dims, batch_dims={"patch": batch})
        yg = xbatcher.BatchGenerator(
            ds["labels"].astype("int64"), input_dims={"y": 128, "x": 128}, batch_dims={"patch": batch}
        )
        loader = torch.utils.data.DataLoader(MapDataset(xg, yg), batch_size=None)
        torch.manual_seed(0)
        model = build_unet(UNetConfig(in_channels=ds.sizes["band"], n_classes=22)).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        wait = busy = 0.0
        images = 0
        t0 = time.perf_counter()
        for i, (x, y) in enumerate(loader):
            t1 = time.perf_counter()
            wait += t1 - t0
            x, y = x.to(dev), y.to(dev)
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            if i:  # the first step includes warm-up
                busy += t0 - t1
                images += x.shape[0]
            else:
                wait = 0.0
            if i >= (8 if dev.type == "cpu" else 40):
                break
        out |= {"images_per_s": images / (wait + busy), "data_wait_frac": wait / (wait + busy)}
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def distributed(args) -> None:
    import os
    import resource
    import socket
    import subprocess

    store = store_path(args.size, args.per_class)
    cores = os.cpu_count() or 1
    rows = {}
    for n in [int(v) for v in args.nproc.split(",")]:
        out = WORK / f"ddp_{n}" / "model.pt"
        out.parent.mkdir(parents=True, exist_ok=True)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(n),
            "--master_port",
            str(port),
        ]
        cmd += [
            "-m",
            "kerinci_xr",
            "-q",
            "train",
            str(store),
            "--out",
            str(out),
            "--overwrite",
            "--no-calibrate",
        ]
        cmd += ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--device", args.device]
        cmd += ["--select", "last"]
        env = os.environ | {"OMP_NUM_THREADS": str(max(cores // n, 1))}
        t0 = time.perf_counter()
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if res.returncode:
            sys.stderr.write(res.stderr[-3000:])
            raise SystemExit(f"torchrun with {n} process(es) failed")
        hist = json.loads(out.with_name("model.history.json").read_text())
        steady = hist[1:] or hist
        rows[n] = {
            "processes": n,
            "threads_per_process": max(cores // n, 1),
            "samples_per_s": sum(r["images_per_s"] for r in steady) / len(steady),
            "data_wait_frac": sum(r["data_wait_frac"] for r in steady) / len(steady),
            "seconds_per_epoch": sum(r["seconds"] for r in steady) / len(steady),
            "wall_s": round(time.perf_counter() - t0, 1),
            "peak_rss_mb_largest_process_so_far": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            / 1024,
        }
    base = rows[min(rows)]["samples_per_s"]
    for n, r in rows.items():
        r["speedup"] = r["samples_per_s"] / base
        r["efficiency"] = r["speedup"] / (n / min(rows))
        print(
            f"{n} process(es) x {r['threads_per_process']} threads: {r['samples_per_s']:.1f} samples/s, "
            f"data wait {100 * r['data_wait_frac']:.1f} %, speed-up {r['speedup']:.2f}, efficiency "
            f"{r['efficiency']:.2f}"
        )
    import torch

    device = "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    save(
        f"bench_train_ddp_{device}",
        {
            "rows": list(rows.values()),
            "global_batch": args.batch_size,
            "epochs": args.epochs,
            "store": str(store),
            "baseline": f"{min(rows)} process(es)",
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--case", default="project")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--size", type=int, default=4000, help="edge of the scene the patches come from")
    ap.add_argument("--per-class", type=int, default=30, help="training patches per class")
    ap.add_argument("--nproc", default=None, help="distributed training under torchrun, e.g. 1,2")
    args = ap.parse_args()
    if args.nproc and not args.child:
        WORK.mkdir(parents=True, exist_ok=True)
        distributed(args)
        return
    if args.child:
        print(
            json.dumps(child(args.case, args.device, args.batch_size, args.epochs, args.size, args.per_class))
        )
        return
    WORK.mkdir(parents=True, exist_ok=True)
    store_path(args.size, args.per_class)
    common = ["--device", args.device, "--batch-size", str(args.batch_size), "--epochs", str(args.epochs)]
    common += ["--size", str(args.size), "--per-class", str(args.per_class)]
    rows = {c: run_child(Path(__file__), "--case", c, *common) for c in ("project", "xbatcher")}
    for c, r in rows.items():
        print(
            f"{c:<9} on {r['device']:<5} batch {r['batch_size']:>3}  {r['images_per_s']:>8.1f} img/s  "
            f"data wait {100 * r['data_wait_frac']:>5.1f} %  peak RSS {r['peak_rss_mb']:>7.1f} MiB"
        )
    w = rows["project"]["data_wait_frac"]
    ratio = rows["project"]["images_per_s"] / rows["xbatcher"]["images_per_s"]
    checks = {
        "data_wait_frac": (round(w, 4), "< 0.05", w < 0.05),
        "images_per_s_vs_xbatcher": (round(ratio, 2), "(baseline)", True),
    }
    for k, (v, t, ok) in checks.items():
        print(f"{k:<26} {v:>8}  target {t:<10} {'PASS' if ok else 'FAIL'}")
    save(
        f"bench_train_{rows['project']['device']}",
        {
            "rows": rows,
            "checks": {k: {"value": v, "target": t, "pass": ok} for k, (v, t, ok) in checks.items()},
        },
    )


if __name__ == "__main__":
    main()
