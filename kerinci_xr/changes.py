"""Land-cover change between two class maps: from-to codes, transition matrix, gross and net change.

Two maps of training ids on one grid and legend give, lazily, a from-to map with one value per
transition (``from_id * (N + 1) + to_id``; 0 where either map has no class), and in one
streaming pass the transition matrix in pixels and in hectares (on the ellipsoid, as class areas
are), from which the gross loss, gross gain and net change of every class follow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .errors import GridMismatchError, InvalidInputError
from .io import grid_differences
from .legend import Legend
from .metrics import counts_and_hectares

__all__ = [
    "ChangeMatrix",
    "change_codes",
    "decode_change",
    "gross_net",
    "transition_legend",
    "transition_matrix",
    "transitions_table",
]


def _check(
    a: xr.DataArray, b: xr.DataArray, legend_a: Legend, legend_b: Legend, what: tuple[str, str]
) -> None:
    if legend_a.values != legend_b.values:
        raise InvalidInputError(
            f"{what[1]}: expected the legend of {what[0]} (codes {list(legend_a.values)}), found codes "
            f"{list(legend_b.values)}. Fix: compare maps predicted with one legend."
        )
    diffs = grid_differences(a, b)
    if diffs:
        raise GridMismatchError(
            f"{what[1]}: expected the grid of {what[0]}, found differences: {'; '.join(diffs)}. "
            "Fix: predict both dates on one cube (or warp one map onto the other's grid)."
        )


def change_codes(
    before: xr.DataArray,
    after: xr.DataArray,
    legend: Legend,
    *,
    after_legend: Legend | None = None,
    names: tuple[str, str] = ("the first map", "the second map"),
) -> xr.DataArray:
    """The lazy from-to map: ``from_id * (N + 1) + to_id`` (uint16), 0 where either map is 0."""
    _check(before, after, legend, after_legend or legend, names)
    n1 = legend.n_classes + 1
    a = before.astype(np.uint16)
    b = after.astype(np.uint16).assign_coords(y=before["y"], x=before["x"])
    codes = xr.where((a > 0) & (b > 0) & (a < n1) & (b < n1), a * n1 + b, 0).astype(np.uint16)
    codes = codes.rename("transition")
    return codes.rio.write_crs(before.rio.crs).rio.write_transform(before.rio.transform())


def decode_change(codes: Any, legend: Legend) -> tuple[Any, Any]:
    """The ``(before, after)`` ids of a from-to map (0 where it is 0)."""
    n1 = legend.n_classes + 1
    return codes // n1, codes % n1


class ChangeMatrix:
    """The transition matrix: ``pixels[i, j]`` and ``hectares[i, j]`` from id ``i`` to id ``j``.

    Row and column 0 stay empty; ``excluded`` counts the pixels without a class at either date.
    """

    def __init__(self, pixels: np.ndarray, hectares: np.ndarray, excluded: int, legend: Legend) -> None:
        self.pixels, self.hectares, self.excluded, self.legend = pixels, hectares, excluded, legend

    def __repr__(self) -> str:
        changed = self.pixels.sum() - np.trace(self.pixels)
        total = self.pixels.sum()
        return f"ChangeMatrix({total:,} pixels compared, {changed:,} changed, {self.excluded:,} excluded)"


def transition_matrix(codes: xr.DataArray, legend: Legend) -> ChangeMatrix:
    """Pixels and hectares of every transition of a from-to map, in one streaming pass."""
    n1 = legend.n_classes + 1
    pixels, hectares = counts_and_hectares(codes, n1 * n1)
    excluded = int(pixels[0])
    pixels[0] = 0
    hectares[0] = 0.0
    return ChangeMatrix(pixels.reshape(n1, n1).astype(np.int64), hectares.reshape(n1, n1), excluded, legend)


def transitions_table(matrix: ChangeMatrix) -> pd.DataFrame:
    """One row per transition that occurs: ``from_id, from_code, from_name, to_id, to_code,
    to_name, pixels, hectares`` (stable classes included, as ``A -> A``)."""
    lg = matrix.legend
    i, j = np.nonzero(matrix.pixels)
    return pd.DataFrame(
        {
            "from_id": i,
            "from_code": [lg.values[k - 1] for k in i],
            "from_name": [lg.name_of(int(k)) for k in i],
            "to_id": j,
            "to_code": [lg.values[k - 1] for k in j],
            "to_name": [lg.name_of(int(k)) for k in j],
            "pixels": matrix.pixels[i, j],
            "hectares": matrix.hectares[i, j],
        }
    )


def gross_net(matrix: ChangeMatrix) -> pd.DataFrame:
    """Per class: area at both dates, gross loss (to other classes), gross gain, net change (ha)."""
    ha = matrix.hectares[1:, 1:]
    stable = np.diag(ha)
    before, after = ha.sum(axis=1), ha.sum(axis=0)
    lg = matrix.legend
    table = pd.DataFrame(
        {
            "id": lg.ids,
            "code": lg.values,
            "name": lg.names,
            "hectares_before": before,
            "hectares_after": after,
            "gross_loss": before - stable,
            "gross_gain": after - stable,
            "net_change": after - before,
        }
    )
    return table[(table["hectares_before"] > 0) | (table["hectares_after"] > 0)].reset_index(drop=True)


def _lighter(hex_colour: str, share: float = 0.65) -> str:
    rgb = [int(hex_colour[k : k + 2], 16) for k in (1, 3, 5)]
    return "".join(f"{round(c + (255 - c) * share):02X}" for c in rgb)


def transition_legend(matrix: ChangeMatrix) -> Legend:
    """A legend of the transitions that occur: codes ``from_id * (N + 1) + to_id``, names
    ``"Primary dryland forest -> Estate crop"``; changes in the new class's colour, stable
    classes in a pale tint of theirs."""
    lg = matrix.legend
    n1 = lg.n_classes + 1
    i, j = np.nonzero(matrix.pixels)
    return Legend(
        values=tuple(int(a * n1 + b) for a, b in zip(i, j, strict=True)),
        labels=tuple(f"{lg.name_of(int(a))} -> {lg.name_of(int(b))}" for a, b in zip(i, j, strict=True)),
        palette=tuple(
            _lighter(lg.colors[b - 1]) if a == b else lg.palette[b - 1] for a, b in zip(i, j, strict=True)
        ),
        source="transitions",
    )
