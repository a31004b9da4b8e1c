"""The Python API: one function per stage, generated from the stage's option declaration.

``kerinci_xr.prepare(image, out=..., chunk=512)`` takes the options the CLI and the pipeline
files take, with the same defaults, and returns what the stage wrote by kind.
"""

from __future__ import annotations

import inspect
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
