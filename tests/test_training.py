import json

import numpy as np
import pytest
import torch

from kerinci_xr.checkpoint import load_checkpoint
from kerinci_xr.cli import main
from kerinci_xr.errors import CheckpointError, InputFileNotFoundError, InvalidInputError
from kerinci_xr.training import TrainConfig, evaluate_store, fit

from .conftest import sampled_run

TINY = {"depth": 2, "base": 8, "batch_size": 8, "lr": 5e-3, "dropout": 0.1}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A 480 x 480 generated scene sampled into 32 x 32 patches."""
    return sampled_run(
        tmp_path_factory.mktemp("train"), height=480, width=480, seed=11, chunk=160, per_class=12
    )[2]


def _weights(path):
    return load_checkpoint(path)["model_state"]


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # a statistical or quality check; the module is covered end to end without it
def test_fit__reaches_80_percent_on_the_test_split(store, tmp_path):
    res = fit(store, tmp_path / "m.pt", config=TrainConfig(epochs=10, **TINY))
    hist = res["history"]
    assert repr(res).startswith(f"TrainResult(epochs={len(hist)}, best_miou=")
    assert len(hist) >= 3
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert {"val_mean_iou", "val_overall_accuracy", "data_wait_frac", "images_per_s"} <= set(hist[0])
    rep = evaluate_store(store, res["best"], split="test")
    assert rep["overall_accuracy"] >= 0.80, rep["overall_accuracy"]
    assert (tmp_path / "m.history.csv").read_text().startswith("epoch,")
    ckpt = load_checkpoint(res["best"])
    assert ckpt["bands"][-2:] == ["HH", "HV"]
    assert len(ckpt["band_mean"]) == 10
    assert ckpt["legend"]["values"][0] == 2001
    assert ckpt["model_config"]["n_classes"] == 22


def test_fit__same_seed_same_weights_and_resume_equals_uninterrupted(small_run, tmp_path):
    store = small_run["patches"]
    cfg = TrainConfig(epochs=2, **TINY)
    a = fit(store, tmp_path / "a.pt", config=cfg)
    b = fit(store, tmp_path / "b.pt", config=cfg)
    assert _same(_weights(a["last"]), _weights(b["last"]))
    fit(store, tmp_path / "c.pt", config=cfg, until_epoch=1)
    assert load_checkpoint(tmp_path / "c.last.pt")["epoch"] == 1
    c = fit(store, tmp_path / "c.pt", config=cfg, resume=True)
    assert len(c["history"]) == 2
    assert _same(_weights(a["last"]), _weights(c["last"]))
    d = fit(store, tmp_path / "d.pt", config=TrainConfig(epochs=2, **{**TINY, "lr": 1e-3}))
    assert not _same(_weights(a["last"]), _weights(d["last"]))


def test_fit__bad_input(store, tmp_path):
    import zarr

    # an empty training split
    g = zarr.open_group(str(store), mode="r")
    empty = tmp_path / "empty.zarr"
    import shutil

    shutil.copytree(store, empty)
    ge = zarr.open_group(str(empty), mode="r+")
    ge["split"][:] = ["test"] * g["split"].shape[0]
    with pytest.raises(InvalidInputError, match="training split is empty"):
        fit(empty, tmp_path / "x.pt", config=TrainConfig(epochs=1, **TINY))
    with pytest.raises(InputFileNotFoundError, match="nothing to resume"):
        fit(store, tmp_path / "y.pt", config=TrainConfig(epochs=1, **TINY), resume=True)
    # a corrupted checkpoint
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match=r"bad\.pt: expected a kerinci_xr checkpoint"):
        load_checkpoint(bad)
    (tmp_path / "pickle.pt").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "pickle.pt")
    with pytest.raises(InputFileNotFoundError):
        load_checkpoint(tmp_path / "none.pt")


def test_checkpoint_from_another_legend_is_refused(store, tmp_path):
    res = fit(store, tmp_path / "m.pt", config=TrainConfig(epochs=1, **TINY))
    ckpt = load_checkpoint(res["best"])
    ckpt["legend"]["values"][0] = 9999
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="trained for classes"):
        evaluate_store(store, tmp_path / "other.pt")
    ckpt = load_checkpoint(res["best"])
    ckpt["bands"] = [*ckpt["bands"][:-1], "VV"]
    torch.save(ckpt, tmp_path / "bands.pt")
    with pytest.raises(CheckpointError, match="trained on bands"):
        evaluate_store(store, tmp_path / "bands.pt")


def test_cli__train_then_evaluate(store, tmp_path, capsys):
    out = tmp_path / "model.pt"
    rc = main(
        [
            "-q",
            "train",
            str(store),
            "--epochs",
            "2",
            "--depth",
            "2",
            "--base",
            "8",
            "--batch-size",
            "8",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    assert out.exists()
    assert (tmp_path / "model.last.pt").exists()
    rc = main(["-q", "evaluate", str(store), "--model", str(out), "--out", str(tmp_path / "m.json")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "overall accuracy" in text
    assert "Primary dryland forest" in text
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["source"]["split"] == "test"
    assert 0 <= report["overall_accuracy"] <= 1
    assert main(["-q", "train", str(store), "--epochs", "1", "--out", str(out)]) == 2
    assert "output exists" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_text("junk")
    assert (
        main(
            [
                "-q",
                "evaluate",
                str(store),
                "--model",
                str(tmp_path / "junk.pt"),
                "--out",
                str(tmp_path / "n.json"),
            ]
        )
        == 2
    )
    assert "expected a kerinci_xr checkpoint" in capsys.readouterr().err


def test_evaluate_loader__each_scene_pixel_counted_once(store):
    """Overlapping test patches: every labelled pixel once, with the most central patch's prediction."""
    import torch

    from kerinci_xr.batching import PatchDataset, make_loader
    from kerinci_xr.legend import Legend
    from kerinci_xr.model import UNet, UNetConfig
    from kerinci_xr.patches import open_patches
    from kerinci_xr.training import evaluate_loader

    legend = Legend.from_json(open_patches(store).attrs["legend"])
    ds = PatchDataset(store, split="test")
    torch.manual_seed(0)
    model = UNet(UNetConfig(in_channels=len(ds.bands), n_classes=legend.n_classes, depth=2, base=8)).eval()
    cm = evaluate_loader(model, make_loader(store, split="test", batch_size=3), legend.n_classes, "cpu")
    # brute force: patch by patch, a dict from scene pixel to (distance to the edge, order, ref, pred)
    best: dict[tuple[int, int], tuple[int, int, int, int]] = {}
    instances = 0
    for i in range(len(ds)):
        item = ds[i]
        with torch.no_grad():
            pred = model(item["image"][None]).argmax(1)[0].numpy() + 1
        mask = item["mask"].numpy()
        r0, c0 = (int(v) for v in ds.starts[i])
        p = mask.shape[0]
        for r, c in zip(*np.nonzero(mask), strict=True):
            instances += 1
            d = min(r, p - 1 - r, c, p - 1 - c)
            key = (r0 + r, c0 + c)
            if key not in best or d > best[key][0]:
                best[key] = (d, i, int(mask[r, c]), int(pred[r, c]))
    assert instances > 1.5 * len(best)  # the test patches do overlap
    expected = np.zeros_like(cm)
    for _, _, t, q in best.values():
        expected[t, q] += 1
    np.testing.assert_array_equal(cm, expected)


def test_fit__preset_values_where_options_are_unset_and_set_options_win(store, tmp_path):
    from kerinci_xr.training import PRESETS

    plain = TrainConfig().resolved(patch=32)
    assert (plain.preset, plain.depth, plain.base, plain.patience) == ("wall-to-wall", 4, 32, 8)
    sparse = TrainConfig(preset="sparse", epochs=40, lr=0.01).resolved(patch=32)
    assert (sparse.depth, sparse.base, sparse.class_weights) == (2, 16, "none")
    assert sparse.patience == 40 and sparse.lr == 0.01  # no early stopping; a set option wins
    assert TrainConfig().resolved(patch=8).depth == 3  # 2 ** depth divides 8
    # fit records what it used: the preset's values where the options were left unset
    out = fit(store, tmp_path / "m.pt", config=TrainConfig(preset="sparse", epochs=1, batch_size=8, base=8))
    saved = load_checkpoint(out.best)
    assert saved["train_config"]["preset"] == "sparse"
    assert saved["model_config"]["depth"] == PRESETS["sparse"]["depth"]
    assert saved["model_config"]["base"] == 8
    assert saved["train_config"]["patience"] == 1 and out.config.lr == PRESETS["sparse"]["lr"]


def test_fit__select_last_keeps_the_last_epoch_without_early_stopping(store, tmp_path):
    cfg = TrainConfig(epochs=3, patience=1, select="last", **TINY)
    out = fit(store, tmp_path / "m.pt", config=cfg)
    assert len(out.history) == 3  # every epoch trained (patience does not stop it)
    assert _same(_weights(out.best), _weights(out.last))


def test_fit__a_last_batch_of_one_patch_at_a_1x1_bottleneck(store, tmp_path):
    """32-pixel patches through a depth-5 U-Net reach a 1 x 1 bottleneck, where batch norm needs
    two patches: a training split that leaves one patch over in its last batch must still train."""
    from kerinci_xr.batching import make_loader
    from kerinci_xr.patches import open_patches

    n_train = int((np.asarray(open_patches(store)["split"].values, dtype=object) == "train").sum())
    batch = 2 if n_train % 2 else n_train - 1  # one patch left over either way
    assert n_train % batch == 1
    assert all(len(b["image"]) > 1 for b in make_loader(store, split="train", batch_size=batch))
    fit(
        store,
        tmp_path / "m.pt",
        config=TrainConfig(epochs=1, depth=5, base=4, batch_size=batch, norm="batch"),
    )
