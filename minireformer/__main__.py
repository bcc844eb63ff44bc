"""``python -m minireformer``: the command line (see ``cli.py``)."""

import sys

from .training.cli import main

sys.exit(main())
