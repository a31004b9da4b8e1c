"""``python -m kerinci_xr``: the same as the ``kerinci-xr`` command."""

import sys

from .cli import main

sys.exit(main())
