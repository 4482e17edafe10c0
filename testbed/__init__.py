"""The test bed shared by ``tests/`` and ``bench/``: real brokers, subscribers and daemon processes;
and ``arm64``, what ``.ci/arm64`` compares between the Pi's architecture and x86.

It is not part of the installed package; both run from the repository's root, where it is importable.
"""
