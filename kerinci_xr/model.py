"""The U-Net (a module-level ``nn.Module``): any number of bands and classes; depth, width, norm, dropout."""

from __future__ import annotations

import torch
from torch import nn

from .errors import InvalidInputError
from .settings import Norm, UNetConfig

__all__ = ["Norm", "UNet", "UNetConfig", "build_unet", "pick_device"]


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "group":
        return nn.GroupNorm(min(8, ch), ch)
    if kind == "instance":
        return nn.InstanceNorm2d(ch, affine=True)
    return nn.Identity()


def _block(config: UNetConfig, cin: int, cout: int, drop: float) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by the normalisation and a ReLU; optional dropout."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, 3, padding=1, bias=config.norm == "none"),
        _norm(config.norm, cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=config.norm == "none"),
        _norm(config.norm, cout),
        nn.ReLU(inplace=True),
    ]
    if drop > 0:
        layers.append(nn.Dropout2d(drop))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """U-Net for per-pixel classification: ``(batch, band, y, x)`` -> ``(batch, class, y, x)`` logits.

    Height and width must be multiples of ``2 ** depth``. The module pickles and exports
    (``torch.export``) like any ``nn.Module``; ``config`` rebuilds it.

    Examples
    --------
    >>> net = UNet(UNetConfig(in_channels=8, n_classes=5, depth=2, base=8))
    >>> tuple(net(torch.zeros(1, 8, 32, 32)).shape)
    (1, 5, 32, 32)
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.base * 2**i for i in range(config.depth + 1)]
        self.down = nn.ModuleList()
        cin = config.in_channels
        for w in widths[:-1]:
            self.down.append(_block(config, cin, w, 0.0))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _block(config, widths[-2], widths[-1], config.dropout)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(w * 2, w, 2, stride=2))
            self.dec.append(_block(config, w * 2, w, config.dropout))
        self.head = nn.Conv2d(widths[0], config.n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.config.multiple
        if h % m or w % m:
            raise InvalidInputError(
                f"U-Net input {h} x {w}: expected height and width divisible by {m} "
                f"(2 ** depth {self.config.depth}). Fix: use patches of e.g. {m * max(1, h // m)}."
            )
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips), strict=True):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def build_unet(config: UNetConfig) -> UNet:
    """The :class:`UNet` of a :class:`UNetConfig` (weights initialised from torch's RNG)."""
    return UNet(config)


def pick_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; otherwise the named device."""
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
