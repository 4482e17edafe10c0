"""The test bed shared by ``tests/`` and ``bench/``: real brokers, subscribers and daemon processes.

It is not part of the installed package; both run from the repository's root, where it is importable.
"""
