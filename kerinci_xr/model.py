"""The U-Net (a module-level ``nn.Module``): any number of bands and classes; depth, width, norm, dropout."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
from torch import nn

from .errors import InvalidInputError

__all__ = ["Norm", "UNet", "UNetConfig", "build_unet", "pick_device"]

Norm = Literal["batch", "group", "instance", "none"]


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a U-Net.

    Parameters
    ----------
    in_channels
        Input bands.
    n_classes
        Output classes (training ids 1..N map to logits 0..N-1).
    depth
        Number of 2x down-samplings; inputs must be divisible by ``2 ** depth``.
    base
        Channels of the first level; they double at each level down.
    norm
        Normalisation after each convolution.
    dropout
        Dropout probability in the bottleneck and decoder (0 = none).
    """

    in_channels: int
    n_classes: int
    depth: int = 4
    base: int = 32
    norm: Norm = "batch"
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.n_classes < 1:
            raise InvalidInputError(
                f"U-Net: expected at least one band and one class, found {self.in_channels} "
                f"band(s) and {self.n_classes} class(es)."
            )
        if not 1 <= self.depth <= 6:
            raise InvalidInputError(f"U-Net depth: expected 1..6, found {self.depth}.")
        if self.base < 4:
            raise InvalidInputError(f"U-Net base width: expected >= 4 channels, found {self.base}.")
        if self.norm not in ("batch", "group", "instance", "none"):
            raise InvalidInputError(
                f"U-Net norm: expected 'batch', 'group', 'instance' or 'none', found {self.norm!r}."
            )
        if not 0 <= self.dropout < 1:
            raise InvalidInputError(f"U-Net dropout: expected 0 <= p < 1, found {self.dropout}.")

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2**self.depth

    @property
    def receptive_field(self) -> int:
        """Receptive field in pixels (two 3x3 convolutions per level, both ways, plus pooling)."""
        d = self.depth
        return 1 + 8 * (2**d - 1) + 4 * 2**d + (2**d - 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


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
