"""The stage layer: one module per stage, each declaring its options once.

:data:`STAGES` maps each stage's name to its :class:`~kerinci_xr.stages._base.Stage`; the CLI,
the pipeline runner and the Python API (:mod:`kerinci_xr.api`) are built from it.
"""

from __future__ import annotations

from . import (
    assess,
    change,
    crossval,
    design_sample,
    evaluate,
    export,
    info,
    map,
    predict,
    prepare,
    quicklook,
    report,
    sample,
    suggest,
    synth,
    train,
)
from ._base import Context, DaskOptions, Stage

#: Every stage by name, in the order of the data flow.
STAGES: dict[str, Stage] = {
    m.STAGE.name: m.STAGE
    for m in (
        synth,
        prepare,
        info,
        quicklook,
        sample,
        train,
        crossval,
        evaluate,
        predict,
        change,
        design_sample,
        assess,
        suggest,
        map,
        report,
        export,
    )
}

__all__ = ["STAGES", "Context", "DaskOptions", "Stage"]
