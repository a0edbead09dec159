"""``python -m noah`` (and ``torchrun -m noah train ...``) runs the ``noah`` command."""

import sys

from noah.cli import main

sys.exit(main())
