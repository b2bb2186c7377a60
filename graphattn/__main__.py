"""``python -m graphattn ...`` (and ``torchrun -m graphattn train ...``) runs the CLI."""

import sys

from .cli import main

sys.exit(main())
