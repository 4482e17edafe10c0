"""``python -m edge`` is ``rclstm-edge``."""

import sys

from edge.cli import main

sys.exit(main())
