"""``python -m doorbell``: the device command line."""

import sys

from doorbell.cli import main

sys.exit(main())
