"""`python -m converter`: the same CLI as `rclstm-convert`."""

import sys

from converter.cli import main

sys.exit(main())
