"""``python -m edge`` is ``rclstm-edge``."""

import sys

from edge.app.cli import main

sys.exit(main())
