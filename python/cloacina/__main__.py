"""``python -m cloacina``: the command line (see :mod:`cloacina.cli`)."""

import sys

from cloacina.cli import main

sys.exit(main())
