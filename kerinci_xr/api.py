"""The Python API: one function per stage, generated from the stage's option declaration.

``kerinci_xr.prepare(image, out=..., chunk=512)`` takes the options the CLI and the pipeline
files take, with the same defaults, and returns what the stage wrote by kind.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .stages import STAGES, Stage

__all__ = sorted(STAGES)


def _function(stage: Stage) -> Callable[..., dict[str, Any]]:
    def call(
        *args: Any, progress: bool = False, echo: Callable | None = None, **options: Any
    ) -> dict[str, Any]:
        return stage(*args, progress=progress, echo=echo, **options)

    params = []
    for spec in stage.specs:
        kind = (
            inspect.Parameter.POSITIONAL_OR_KEYWORD
            if spec.name in stage.args
            else inspect.Parameter.KEYWORD_ONLY
        )
        default = inspect.Parameter.empty if spec.required else spec.default
        params.append(inspect.Parameter(spec.name, kind, default=default, annotation=spec.type))
    params.sort(key=lambda p: p.kind)
    params += [
        inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default=False),
        inspect.Parameter("echo", inspect.Parameter.KEYWORD_ONLY, default=None),
    ]
    call.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    call.__name__ = call.__qualname__ = stage.name
    call.__module__ = __name__
    lines = [f"{s.name}: {s.meta.get('help', '')}" for s in stage.specs]
    call.__doc__ = f"{stage.help[0].upper()}{stage.help[1:]}.\n\nOptions\n-------\n" + "\n".join(lines)
    return call


globals().update({name: _function(stage) for name, stage in STAGES.items()})
