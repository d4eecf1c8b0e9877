"""``python -m aiocore``: the same as the ``aiocore`` command."""

import sys

from ._cli import main

sys.exit(main())
