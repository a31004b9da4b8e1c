"""Options declared once: dataclass fields with default, type and help, read by the CLI, the
pipeline runner and the Python API alike; :func:`check` is the one type check all three use."""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Iterator
from typing import Any, Literal

from ._products import Kind
from .errors import InvalidInputError

__all__ = ["OptionSpec", "check", "coerce", "option", "specs"]

Direction = Literal["in", "out"]


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    positional: bool = False,
    io: Direction | None = None,
    kind: Kind | None = None,
    run_name: str | None = None,
    length: int | None = None,
    pipeline: bool = True,
    metavar: str | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    off: str | None = None,
) -> Any:
    """A dataclass field declaring one option.

    Parameters
    ----------
    default
        The one default (omit for a required option).
    help
        One line of help, shown by ``--help``.
    positional
        A positional argument on the command line instead of ``--name``.
    io, kind
        ``"in"``/``"out"`` for paths a stage reads/writes, with the kind of product
        (:class:`~._products.Kind`: ``Kind.CUBE``, ``Kind.MODEL`` ...) the pipeline runner wires
        between stages.
    run_name
        The file name an output gets inside a pipeline's run folder when the file does not say.
    length
        Exact number of items of a tuple option.
    pipeline
        ``False`` for an option the pipeline runner sets itself (``overwrite``).
    ge, gt, le
        Bounds of a number (of each item of a tuple of numbers): at least, more than, at most.
        Every float option must be finite.
    off
        For a switch that is on by default: what its ``--no-`` flag does (its help text).
    """
    if kind is not None and not isinstance(kind, Kind):  # a programming error: kinds come from the registry
        raise TypeError(f"option kind {kind!r}: expected a kerinci_xr._products.Kind")
    meta = dict(help=help, positional=positional, io=io, kind=kind, run_name=run_name)
    meta |= dict(length=length, pipeline=pipeline, metavar=metavar, ge=ge, gt=gt, le=le, off=off)
    return dataclasses.field(default=default, metadata=meta, kw_only=True)


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One option of an options dataclass, with its resolved type."""

    name: str
    type: Any
    default: Any
    meta: typing.Mapping[str, Any]

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    @property
    def optional(self) -> bool:
        """``None`` is an accepted value (``X | None``)."""
        return type(None) in typing.get_args(self.type)

    @property
    def base(self) -> Any:
        """The type without ``None``."""
        args = [a for a in typing.get_args(self.type) if a is not type(None)]
        if typing.get_origin(self.type) in (typing.Union, types.UnionType) and len(args) == 1:
            return args[0]
        return self.type

    @property
    def choices(self) -> tuple | None:
        return typing.get_args(self.base) if typing.get_origin(self.base) is Literal else None

    @property
    def item(self) -> Any:
        """Item type of a ``tuple[X, ...]`` option, else ``None``."""
        return typing.get_args(self.base)[0] if typing.get_origin(self.base) is tuple else None

    def bounds(self) -> str:
        """The bounds of a number, in words (empty when it has none)."""
        words = [
            f"{word} {_num(self.meta[key])}"
            for key, word in (("ge", "at least"), ("gt", "more than"), ("le", "at most"))
            if self.meta.get(key) is not None
        ]
        return " and ".join(words)

    def within(self, value: Any) -> bool:
        """Whether a number is finite and within the bounds."""
        if isinstance(value, float) and not math.isfinite(value):
            return False
        ge, gt, le = (self.meta.get(k) for k in ("ge", "gt", "le"))
        return (ge is None or value >= ge) and (gt is None or value > gt) and (le is None or value <= le)

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.item is not None:
            n = self.meta.get("length")
            return f"a list of {f'{n} ' if n else ''}{_NAMES.get(self.item, 'value')}s"
        return ("an " if self.base is int else "a ") + _NAMES.get(self.base, str(self.base))


_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean (true/false)"}


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def specs(cls: type) -> Iterator[OptionSpec]:
    """The options of an options dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        yield OptionSpec(f.name, hints[f.name], f.default, f.metadata)


_ACCEPTS = {bool: (bool,), int: (int,), float: (int, float), str: (str, os.PathLike)}


def _scalar(value: Any, tp: Any) -> tuple[bool, Any]:
    """Whether ``value`` is of type ``tp`` (a bool is no number), and the value as ``tp``."""
    ok = isinstance(value, _ACCEPTS.get(tp, object)) and (tp is bool or not isinstance(value, bool))
    return ok, (tp(value) if ok and tp in (float, str) else value)


def coerce(spec: OptionSpec, value: Any, *, where: str) -> Any:
    """Check ``value`` against an option's type; return it normalised (tuples, floats, str paths)."""
    if value is None and (spec.optional or spec.default is None):
        return None
    bad = InvalidInputError(
        f"{where + ': ' if where else ''}{spec.name} must be {spec.describe()}, "
        f"found {type(value).__name__} {value!r}."
    )
    if spec.choices:
        if value not in spec.choices:
            raise bad
        return value
    if spec.item is not None:
        if spec.item is str and isinstance(value, (str, os.PathLike)):
            value = (value,)  # one path where several may stand
        if not isinstance(value, (list, tuple)):
            raise bad
        out = []
        for v in value:
            ok, v = _scalar(v, spec.item)
            if not ok:
                raise bad
            if spec.item in (int, float) and not spec.within(v):
                raise _out_of_bounds(spec, v, where)
            out.append(v)
        n = spec.meta.get("length")
        if n is not None and len(out) != n:
            raise bad
        return tuple(out)
    ok, value = _scalar(value, spec.base)
    if not ok:
        raise bad
    if spec.base in (int, float) and not spec.within(value):
        raise _out_of_bounds(spec, value, where)
    return value


def _out_of_bounds(spec: OptionSpec, value: Any, where: str) -> InvalidInputError:
    number = "a finite number" if float in (spec.base, spec.item) else "an integer"
    want = f"{number} {spec.bounds()}".strip()
    what = f" ({spec.meta['help']})" if spec.meta.get("help") else ""
    return InvalidInputError(
        f"{where + ': ' if where else ''}{spec.name}{what} must be {want}, found {value!r}. Fix: pass {want}."
    )


def check(options: typing.Iterable[OptionSpec], values: typing.Mapping[str, Any], *, where: str) -> dict:
    """``values`` type-checked against ``options``; an unknown key is an error naming it."""
    known = {s.name: s for s in options}
    unknown = [k for k in values if k not in known]
    if unknown:
        prefix = f"{where}: " if where else ""
        raise InvalidInputError(f"{prefix}unknown key(s) {unknown}; expected some of {sorted(known)}.")
    return {k: coerce(known[k], v, where=where) for k, v in values.items()}
