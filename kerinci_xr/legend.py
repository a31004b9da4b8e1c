"""The class legend read from ``lc.json``: original codes, training ids 1..N, names and colours.

The legend is the single source of truth for the label remap (``lut``), the loss's ignore index
(0), metric labels, map colours and the COG colour table.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._locations import Location, is_url, read_bytes
from ._outputs import write_text
from .errors import InputFileNotFoundError, LegendError

__all__ = ["NODATA_ID", "Legend", "legend_of", "read_legend"]

#: Training id of nodata / ignored pixels; real classes are 1..N.
NODATA_ID = 0

_HEX = re.compile(r"^#?([0-9A-Fa-f]{6})$")
#: Largest original code a dense lookup table is built for (codes are non-negative integers).
_MAX_CODE = 2**24


@dataclass(frozen=True)
class Legend:
    """Land-cover classes in file order; class ``i`` (0-based) gets training id ``i + 1``.

    Parameters
    ----------
    values
        Original class codes as they appear in the label raster (e.g. KLHK 2001, 50011).
    labels
        Human-readable class names, one per code.
    palette
        Colours as ``"RRGGBB"`` hex strings (a leading ``#`` is accepted and dropped).

    Examples
    --------
    >>> lg = Legend(values=(10, 20), labels=("forest", "water"), palette=("006400", "#0000FF"))
    >>> lg.ids
    (1, 2)
    >>> int(lg.lut[20])
    2
    """

    values: tuple[int, ...]
    labels: tuple[str, ...]
    palette: tuple[str, ...]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "palette", tuple(self.palette))
        _validate(self.values, self.labels, self.palette, self.source)
        object.__setattr__(
            self,
            "palette",
            tuple(_HEX.match(c).group(1).upper() for c in self.palette),  # type: ignore[union-attr]
        )

    # ---- derived views -------------------------------------------------------------------
    @property
    def n_classes(self) -> int:
        """Number of classes N (training ids run 1..N)."""
        return len(self.values)

    @property
    def ids(self) -> tuple[int, ...]:
        """Training ids 1..N in file order."""
        return tuple(range(1, self.n_classes + 1))

    @property
    def names(self) -> tuple[str, ...]:
        """Class names indexed by training id - 1."""
        return self.labels

    @property
    def colors(self) -> tuple[str, ...]:
        """Colours as ``"#RRGGBB"`` strings indexed by training id - 1."""
        return tuple("#" + c for c in self.palette)

    @property
    def rgb(self) -> np.ndarray:
        """``(N + 1, 3)`` uint8 colours indexed by training id; row 0 (nodata) is black."""
        out = np.zeros((self.n_classes + 1, 3), dtype=np.uint8)
        for i, c in enumerate(self.palette, start=1):
            out[i] = [int(c[k : k + 2], 16) for k in (0, 2, 4)]
        return out

    @property
    def lut(self) -> np.ndarray:
        """Dense uint8 lookup table from original code to training id (0 for unknown codes)."""
        table = np.zeros(max(self.values) + 1, dtype=np.uint8)
        table[list(self.values)] = self.ids
        return table

    def id_of(self, code: int) -> int:
        """Training id of an original code (0 if the code is not in the legend)."""
        try:
            return self.values.index(int(code)) + 1
        except ValueError:
            return NODATA_ID

    def name_of(self, class_id: int) -> str:
        """Class name of a training id (``"nodata"`` for 0)."""
        return "nodata" if class_id == NODATA_ID else self.labels[class_id - 1]

    def cf_attrs(self, long_name: str) -> dict[str, object]:
        """CF attributes of a layer of training ids: ``flag_values``, ``flag_meanings``, colours."""
        meanings = ["nodata"] + [re.sub(r"[^0-9A-Za-z]+", "_", n).strip("_").lower() for n in self.names]
        return {
            "long_name": long_name,
            "flag_values": [0, *self.ids],
            "flag_meanings": " ".join(meanings),
            "flag_colors": " ".join(["#000000", *self.colors]),
            "class_codes": [0, *self.values],
            "legend": self.to_json(),
            "nodata": NODATA_ID,
        }

    def __repr__(self) -> str:
        return (
            f"Legend({self.n_classes} classes from {self.source}: "
            + ", ".join(f"{v} {n}" for v, n in zip(self.values[:4], self.names[:4], strict=True))
            + (", ..." if self.n_classes > 4 else "")
            + ")"
        )

    def _repr_html_(self) -> str:
        from html import escape

        rows = "".join(
            f"<tr><td>{i}</td><td>{v}</td><td><span style='display:inline-block;width:12px;height:12px;"
            f"background:{c}'></span> {escape(n)}</td></tr>"
            for i, v, n, c in zip(self.ids, self.values, self.names, self.colors, strict=True)
        )
        return f"<table><tr><th>id</th><th>code</th><th>class</th></tr>{rows}</table>"

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, list]:
        """The ``lc.json`` structure (palette without ``#``)."""
        return {
            "values": list(self.values),
            "label": list(self.labels),
            "palette": list(self.palette),
        }

    def to_json(self) -> str:
        """Compact JSON for Zarr/NetCDF attributes; :meth:`from_json` reverses it."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, *, source: str = "<attrs>") -> Legend:
        """Parse the ``lc.json`` structure from a JSON string; each text is parsed once (a legend
        is immutable, so every product and stage that carries the same text shares one object)."""
        return _parsed(text, source)

    @classmethod
    def _from_json(cls, text: str, source: str) -> Legend:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LegendError(
                f"{source}: expected a JSON object with keys 'values', 'label', 'palette', "
                f"found text that is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}). "
                "Fix: save the legend as valid JSON."
            ) from exc
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: object, *, source: str = "<dict>") -> Legend:
        """Build a legend from the ``lc.json`` structure (``values``, ``label``, ``palette``)."""
        if not isinstance(data, dict):
            raise LegendError(
                f"{source}: expected a JSON object with keys 'values', 'label', 'palette', "
                f"found {type(data).__name__}. Fix: wrap the three lists in an object."
            )
        missing = [k for k in ("values", "label", "palette") if k not in data]
        if missing:
            raise LegendError(
                f"{source}: expected keys 'values', 'label', 'palette', missing {missing} "
                f"(found keys {sorted(data)}). Fix: add the missing list(s)."
            )
        for key in ("values", "label", "palette"):
            if not isinstance(data[key], list):
                raise LegendError(
                    f"{source}: expected '{key}' to be a list, found {type(data[key]).__name__}."
                )
        return cls(values=data["values"], labels=data["label"], palette=data["palette"], source=source)

    def to_text(self) -> str:
        """The legend as ``lc.json`` text (pretty-printed, original key names)."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def write(self, path: str | os.PathLike) -> Location:
        """Write the legend as ``lc.json``, atomically."""
        return write_text(path, self.to_text())


@functools.lru_cache(maxsize=64)
def _parsed(text: str, source: str) -> Legend:
    return Legend._from_json(text, source)


def legend_of(obj: Any, *, key: str = "legend") -> Legend:
    """The legend a product carries, parsed once: a Dataset or DataArray (its ``key`` attribute),
    a checkpoint (its ``key`` entry), a JSON text, or a :class:`Legend` itself."""
    if isinstance(obj, Legend):
        return obj
    if isinstance(obj, str):
        return Legend.from_json(obj)
    attrs = getattr(obj, "attrs", None)
    value = attrs.get(key) if attrs is not None else obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, dict):
        value = json.dumps(value, separators=(",", ":"))
    if not value:
        raise LegendError(
            f"expected a product that carries its legend (a {key!r} attribute), found none. "
            "Fix: pass the product kerinci-xr wrote (a cube with labels, a prediction, a checkpoint)."
        )
    return Legend.from_json(value, source=f"{key} of the product")


def _validate(values: Sequence, labels: Sequence, palette: Sequence, source: str) -> None:
    n = len(values)
    if n == 0:
        raise LegendError(f"{source}: expected at least one class, found empty 'values'.")
    if n > 255:
        raise LegendError(
            f"{source}: expected at most 255 classes (training ids are uint8), found {n}. Fix: merge classes."
        )
    if not (len(labels) == n and len(palette) == n):
        raise LegendError(
            f"{source}: expected 'values', 'label' and 'palette' of equal length, found "
            f"{n}, {len(labels)} and {len(palette)}. Fix: give every class a code, a name and a colour."
        )
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < _MAX_CODE:
            raise LegendError(
                f"{source}: expected class codes to be integers in [0, {_MAX_CODE}), found {v!r}."
            )
    if 0 in values:
        raise LegendError(
            f"{source}: code 0 is reserved for nodata, found it among 'values'. "
            "Fix: drop it from the legend (0 pixels are ignored anyway)."
        )
    seen: set[int] = set()
    dups = sorted({int(v) for v in values if v in seen or seen.add(v)})  # type: ignore[func-returns-value]
    if dups:
        raise LegendError(
            f"{source}: expected unique class codes, found duplicates {dups}. Fix: merge or renumber."
        )
    for name in labels:
        if not isinstance(name, str) or not name.strip():
            raise LegendError(f"{source}: expected non-empty class names, found {name!r}.")
    for c in palette:
        if not isinstance(c, str) or not _HEX.match(c):
            raise LegendError(
                f"{source}: expected colours as 6-digit hex 'RRGGBB' or '#RRGGBB', found {c!r}. "
                "Fix: write e.g. '006400'."
            )


def read_legend(path: str | Path) -> Legend:
    """Read an ``lc.json`` legend file.

    Parameters
    ----------
    path
        JSON file (a path, or a URL: ``s3://``, ``https://``) with lists ``values`` (original
        codes), ``label`` (names) and ``palette`` (hex colours with or without ``#``), all of the
        same length.

    Examples
    --------
    >>> lg = read_legend("../shared/data/kerinci/lc.json")  # doctest: +SKIP
    >>> lg.n_classes, lg.name_of(1)  # doctest: +SKIP
    (22, 'Primary dryland forest')
    """
    if not is_url(path) and not Path(path).is_file():
        raise InputFileNotFoundError(
            f"{path}: legend file not found. Fix: pass the path of an existing lc.json."
        )
    try:
        text = read_bytes(path, "legend file").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LegendError(f"{path}: expected UTF-8 JSON text, found binary data.") from exc
    return Legend.from_json(text, source=str(path))
