import pytest
import torch

from kerinci_xr.errors import InvalidInputError
from kerinci_xr.model import UNetConfig, build_unet
from kerinci_xr.training import loss_fn


@pytest.mark.parametrize("norm", ["batch", "group", "instance", "none"])
def test_unet__shapes_for_any_bands_classes_sizes(norm):
    torch.manual_seed(0)
    net = build_unet(UNetConfig(in_channels=10, n_classes=22, depth=3, base=8, norm=norm, dropout=0.1))
    for size in (32, 64, 128):
        assert net(torch.randn(2, 10, size, size)).shape == (2, 22, size, size)
    assert net(torch.randn(1, 10, 48, 96)).shape == (1, 22, 48, 96)


def test_unet__size_not_divisible_is_a_clear_error():
    net = build_unet(UNetConfig(in_channels=3, n_classes=2, depth=3, base=8))
    with pytest.raises(InvalidInputError, match="divisible by 8"):
        net(torch.randn(1, 3, 36, 36))
    with pytest.raises(InvalidInputError, match="depth"):
        UNetConfig(in_channels=3, n_classes=2, depth=9)


@pytest.mark.slow  # a statistical or quality check; the module is covered end to end without it
def test_unet__overfits_one_small_batch():
    torch.manual_seed(0)
    net = build_unet(UNetConfig(in_channels=4, n_classes=3, depth=2, base=8))
    x = torch.randn(4, 4, 32, 32)
    y = torch.randint(1, 4, (4, 32, 32))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(200):
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # the best of the last steps, not the last alone: multi-threaded CPU sums vary from run to
    # run, and Adam at this rate can spike for a step once the loss is tiny (the full suite
    # failed here once with the same seed; the trajectory is printed if it fails again)
    assert min(losses[-10:]) < 0.1 * losses[0], [round(v, 4) for v in losses[::20]]


def test_loss__nodata_pixels_change_nothing():
    torch.manual_seed(0)
    y = torch.randint(0, 4, (2, 16, 16))  # 0 = nodata
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    loss = loss_fn(logits, y, weight=torch.tensor([1.0, 2.0, 0.5]), dice=0.5)
    loss.backward()
    nodata = (y == 0).unsqueeze(1).expand_as(logits)
    assert (logits.grad[nodata] == 0).all()
    assert (logits.grad[~nodata] != 0).any()
    other = logits.detach().clone()
    other[nodata] = torch.randn(int(nodata.sum())) * 100
    assert torch.allclose(loss_fn(other, y, weight=torch.tensor([1.0, 2.0, 0.5]), dice=0.5), loss)
    # a per-pixel model: change the image under nodata pixels, same loss
    net = torch.nn.Conv2d(5, 3, 1)
    x = torch.randn(2, 5, 16, 16)
    x2 = x.clone()
    x2[(y == 0).unsqueeze(1).expand_as(x)] = 1e3
    assert torch.allclose(loss_fn(net(x), y), loss_fn(net(x2), y))
    # a batch without any labelled pixel: zero loss, finite gradient
    empty = loss_fn(logits, torch.zeros_like(y))
    assert float(empty) == 0.0


def test_unet__pickles_and_exports():
    import pickle

    from kerinci_xr.model import UNet

    net = UNet(UNetConfig(in_channels=4, n_classes=3, depth=2, base=8)).eval()
    x = torch.randn(1, 4, 32, 32)
    again = pickle.loads(pickle.dumps(net))
    assert isinstance(again, UNet)
    assert torch.equal(again(x), net(x))
    exported = torch.export.export(net, (x,))
    assert torch.allclose(exported.module()(x), net(x))
