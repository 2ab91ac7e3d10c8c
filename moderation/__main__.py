"""``python -m moderation``."""

import sys

from moderation.cli import main

sys.exit(main())
