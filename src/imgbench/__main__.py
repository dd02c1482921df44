"""``python -m imgbench``: the same command as ``imgbench``."""

import sys

from imgbench.cli import main

sys.exit(main())
