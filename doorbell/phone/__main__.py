"""``python -m doorbell.phone``: the phone's reference client, like ``doorbell-phone``."""

import sys

from doorbell.phone.cli import main

sys.exit(main())
