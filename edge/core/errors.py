"""What every command means by its exit status, and the one error that means "bad user input"."""

from __future__ import annotations

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad user input (a config key, a recording, a label, a flag): exit status 2, one line per problem.

    Failures of the world (a camera, a broker, a bundle) are not this: they exit with 1.
    """
