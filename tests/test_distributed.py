"""Training under torchrun (2 CPU processes, gloo), against one process doing the same by hand."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

from kerinci_xr.batching import GlobalBatches
from kerinci_xr.checkpoint import load_checkpoint
from tests.conftest import wait_for

#: What the runs train: no batch statistics (group norm) and no dropout, so that two processes
#: and one process accumulating the same halves compute the same gradients.
CONFIG = ["--depth", "2", "--base", "8", "--norm", "group", "--dropout", "0", "--class-weights", "none"]
CONFIG += ["--lr", "0.003", "--batch-size", "8", "--select", "last", "--no-calibrate", "--seed", "3"]


def _sampler(n, epoch, rank=0, world=1):
    s = GlobalBatches(n, 8, seed=5, rank=rank, world=world, drop_small=True)
    s.set_epoch(epoch)
    return s


@pytest.mark.parametrize("n", [37, 40, 9])
def test_global_batches__processes_share_every_epoch_once(n):
    for epoch in (0, 1):
        one = _sampler(n, epoch)
        ranks = [_sampler(n, epoch, rank, 2) for rank in (0, 1)]
        assert all(len(r.parts()) == len(one.parts()) for r in ranks)  # the same number of steps
        both = list(ranks[0]) + list(ranks[1])
        assert len(both) == len(set(both))  # no patch twice
        assert set(both) == set(one)  # and none skipped
        assert all(t // n == epoch for t in both)  # tagged with the epoch (the augmentation's seed)
        for g, a, b in zip(one.batches(), ranks[0].parts(), ranks[1].parts(), strict=True):
            assert sorted([*a, *b]) == sorted(g)  # each global batch split between the two
    with pytest.raises(Exception, match="must divide evenly among the 3"):
        GlobalBatches(10, 8, world=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*argv, nproc=2, script=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    cmd += [script] if script else ["-m", "kerinci_xr"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return cmd + [str(a) for a in argv], env


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from tests.conftest import sampled_run

    root = tmp_path_factory.mktemp("ddp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, _, patches = sampled_run(root, height=256, width=256, seed=2, chunk=128, per_class=3, block=64)
    return patches


def test_torchrun__two_processes_equal_one_accumulating_the_halves(store, tmp_path):
    out = tmp_path / "ddp.pt"
    cmd, env = _torchrun("-q", "train", store, "--out", out, "--epochs", "1", *CONFIG)
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count(f"wrote {out}") == 1  # rank 0 alone writes and says so
    ckpt = load_checkpoint(out)
    assert ckpt["world_size"] == 2

    # one process, by hand: the same global batches, each as two halves whose gradients are averaged
    from kerinci_xr.batching import PatchDataset
    from kerinci_xr.model import UNet, UNetConfig

    torch.manual_seed(3)
    model = UNet(UNetConfig.from_dict(ckpt["model_config"]))
    data = PatchDataset(store, split="train", augment=True, seed=3)
    order = GlobalBatches(len(data), 8, seed=3, drop_small=True)
    batches = order.batches()
    opt = torch.optim.AdamW(model.parameters(), lr=0.003, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.003, total_steps=len(batches), pct_start=min(0.3, 2 / 1), anneal_strategy="cos"
    )
    model.train()
    for batch in batches:
        opt.zero_grad()
        for half in np.array_split(batch, 2):
            b = data.read_batch(half.tolist())  # epoch 0: the tags are the indices
            logits = model(b["image"])
            loss = torch.nn.functional.cross_entropy(logits, b["mask"] - 1, ignore_index=-1)
            (loss / 2).backward()
        opt.step()
        sched.step()
    for name, value in model.state_dict().items():
        assert torch.allclose(value, ckpt["model_state"][name], atol=2e-5), name

    # validation: gathered from both processes, each pixel once = one process on the same weights
    from kerinci_xr.training import evaluate_store

    single = evaluate_store(store, out, split="val", device="cpu")
    row = ckpt["history"][-1]
    assert row["val_overall_accuracy"] == pytest.approx(single["overall_accuracy"], abs=1e-12)
    assert row["val_mean_iou"] == pytest.approx(single["mean_iou"], abs=1e-12)


#: A training process that, as rank 1 at the start of its second epoch, says where it is and waits
#: (bounded) to be killed.
PAUSER = textwrap.dedent(
    """
    import os, pathlib, sys, time
    ready = pathlib.Path(sys.argv[1])
    import kerinci_xr.training as t
    orig = t._train_epoch
    def paused(run, epoch, progress):
        if epoch == 1 and run.world.rank == 1:
            ready.write_text(str(os.getpid()))
            for _ in range(6000):  # 10 minutes at most: the test kills this process long before
                time.sleep(0.1)
        return orig(run, epoch, progress)
    t._train_epoch = paused
    from kerinci_xr.cli import main
    sys.exit(main(sys.argv[2:]))
    """
)


def test_torchrun__a_killed_rank_ends_the_run_then_resume_on_one_process(store, tmp_path):
    script, ready = tmp_path / "pauser.py", tmp_path / "ready"
    script.write_text(PAUSER)
    out = tmp_path / "model.pt"
    args = ["-q", "train", store, "--out", out, "--epochs", "3", *CONFIG, "--dist-timeout", "120"]
    cmd, env = _torchrun(ready, *args, script=str(script))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(ready, proc)  # rank 1 is in epoch 2; epoch 1 is committed
    os.kill(int(ready.read_text()), signal.SIGKILL)
    _, err = proc.communicate(timeout=600)  # a bound, not a guess: the run ends well before
    assert proc.returncode != 0
    lines = [line for line in err.splitlines() if line.startswith("kerinci-xr train: error: rank 0")]
    assert lines, err[-3000:]
    assert "--resume" in lines[0]
    assert load_checkpoint(tmp_path / "model.last.pt")["epoch"] == 1  # the last committed epoch
    # resume on one process: a notice of the change, and the run finishes
    res = subprocess.run(
        [sys.executable, "-m", "kerinci_xr", *map(str, args), "--resume"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming after epoch 1 on 1 process(es); the epochs so far ran on 2" in res.stderr
    ckpt = load_checkpoint(out)
    assert ckpt["epoch"] == 3 and [r["epoch"] for r in ckpt["history"]] == [1, 2, 3]
    assert json.loads((tmp_path / "model.history.json").read_text())[-1]["epoch"] == 3


def test_torchrun__crossval_trains_each_fold_on_both_processes(store, tmp_path):
    import pandas as pd
    from sklearn.metrics import accuracy_score

    from kerinci_xr.patches import open_patches

    cube = open_patches(store).attrs["cube"]
    out = tmp_path / "cv"
    args = ["-q", "crossval", cube, "--folds", "3", "--patch", "32", "--block", "64", "--per-class", "3"]
    args += ["--epochs", "1", "--models", "unet,lightgbm", "--rounds", "10", "--out", out, *CONFIG]
    cmd, env = _torchrun(*args)
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("fold 1/3 unet: OA") == 1  # rank 0 alone reports
    assert res.stdout.count("fold 1/3 unet: training, then scoring") == 1
    report = json.loads((out / "crossval.json").read_text())
    trained = [f for f in (1, 2, 3) if (out / f"fold{f}" / "model.pt").exists()]
    assert trained and all(load_checkpoint(out / f"fold{f}" / "model.pt")["world_size"] == 2 for f in trained)
    folds = pd.concat(pd.read_parquet(out / f"fold{f}" / "test_samples.parquet") for f in trained)
    pooled = report["models"]["unet"]["pooled"]["overall_accuracy"]
    assert pooled == pytest.approx(accuracy_score(folds["reference"], folds["unet"]), abs=5e-4)


def test_train__sync_bn_on_cpu_and_a_batch_that_does_not_divide_are_refused(store, tmp_path, capsys):
    from kerinci_xr.cli import main

    out = tmp_path / "m.pt"
    assert main(["-q", "train", str(store), "--out", str(out), "--sync-bn", "--device", "cpu"]) == 2
    assert "SyncBatchNorm runs on CUDA only" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(Exception, match="must divide evenly among the 4 processes"):
        GlobalBatches(40, 6, world=4)
