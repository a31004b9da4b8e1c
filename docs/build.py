"""Build the API reference from the docstrings with pdoc: one page per public module of
kerinci_xr (and the stages), the names ``import kerinci_xr as kx`` gives on the package's page.

    python3 docs/build.py [OUT]      # default OUT: docs/api (open OUT/index.html)
    python3 -m pdoc kerinci_xr       # or browse it live
"""

import pkgutil
import sys
from pathlib import Path

import pdoc
import pdoc.render

import kerinci_xr


def public_modules() -> list[str]:
    """The package, its public modules and the stage package (not the ``_private`` helpers)."""
    names = [m.name for m in pkgutil.iter_modules(kerinci_xr.__path__) if not m.name.startswith("_")]
    return ["kerinci_xr", *(f"kerinci_xr.{n}" for n in sorted(names))]


def build(out: Path) -> Path:
    for name in kerinci_xr._LAZY:  # the names loaded on first use: pdoc reads the module's dict
        getattr(kerinci_xr, name)
    pdoc.render.configure(docformat="numpy", footer_text=f"kerinci_xr {kerinci_xr.__version__}")
    pdoc.pdoc(*public_modules(), output_directory=out)
    return out


if __name__ == "__main__":
    where = build(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "api")
    print(f"API reference: {where / 'index.html'}")
