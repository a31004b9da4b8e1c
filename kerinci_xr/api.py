"""The Python API: one function per stage, generated from the stage's option declaration.

``kerinci_xr.prepare(image, out=..., chunk=512)`` takes the options the CLI and the pipeline
files take, with the same defaults, and returns what the stage wrote by kind.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from .stages import STAGES, Stage

__all__ = sorted(name.replace("-", "_") for name in STAGES)  # design-sample -> design_sample


def _function(stage: Stage) -> Callable[..., dict[str, Any]]:
    def call(*args: Any, **options: Any) -> dict[str, Any]:
        return stage(*args, **options)

    P = inspect.Parameter
    params = [
        P(
            s.name,
            P.POSITIONAL_OR_KEYWORD if s.name in stage.args else P.KEYWORD_ONLY,
            annotation=s.type,
            default=P.empty if s.required else s.default,
        )
        for s in stage.specs
    ]
    params.sort(key=lambda p: p.kind)
    params += [P("progress", P.KEYWORD_ONLY, default=False), P("echo", P.KEYWORD_ONLY, default=None)]
    call.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    call.__name__ = call.__qualname__ = stage.name.replace("-", "_")
    call.__module__ = __name__
    lines = [f"{s.name}: {s.meta.get('help', '')}" for s in stage.specs]
    call.__doc__ = f"{stage.help[0].upper()}{stage.help[1:]}.\n\nOptions\n-------\n" + "\n".join(lines)
    return call


globals().update({name.replace("-", "_"): _function(stage) for name, stage in STAGES.items()})


def _annotation(tp: Any) -> str:
    """A type as stub source text (``str | None``, ``Literal['a', 'b']``, ``tuple[str, ...]``)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:  # X | None
        rest = [a for a in args if a is not type(None)]
        return " | ".join([*(_annotation(a) for a in rest), "None"])
    text = inspect.formatannotation(tp)
    return text.replace("typing.", "").replace("NoneType", "None")


def stub_text() -> str:
    """The source of ``api.pyi``: every generated stage function with its real signature, so
    type checkers and editors see the options (``python -m kerinci_xr.api`` rewrites the file)."""
    lines = [
        '"""Signatures of the generated stage functions (written by ``python -m kerinci_xr.api``)."""',
        "",
        "import os",
        "from collections.abc import Callable, Sequence",
        "from typing import Any, Literal",
        "",
        "PathLike = str | os.PathLike[str]",
        "",
        f"__all__ = {__all__!r}",
        "",
    ]
    for name, stage in STAGES.items():
        sig = inspect.signature(globals()[name.replace("-", "_")])
        paths = {s.name for s in stage.specs if s.meta.get("io")}
        params, star = [], False
        for p in sig.parameters.values():
            if p.kind is p.KEYWORD_ONLY and not star:
                params.append("*")
                star = True
            annotation = _annotation(p.annotation)
            if p.name in paths:  # a location: a str or a path (several where the option takes a list)
                many = annotation.startswith("tuple[")
                annotation = "PathLike | Sequence[PathLike]" if many else "PathLike"
                annotation += " | None" if p.default is None else ""
            annotation = {"echo": "Callable[[str], Any] | None", "progress": "bool"}.get(p.name, annotation)
            default = "" if p.default is p.empty else " = ..."
            params.append(f"{p.name}: {annotation}{default}")
        lines += [
            f"def {name.replace('-', '_')}({', '.join(params)}) -> dict[str, Any]:",
            f'    """{stage.help[0].upper()}{stage.help[1:]}."""',
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    from pathlib import Path

    Path(__file__).with_suffix(".pyi").write_text(stub_text(), encoding="utf-8")
