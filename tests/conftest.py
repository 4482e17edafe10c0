"""Shared fixtures live in plugin modules so each area owns its own."""

pytest_plugins = ["tests.fixtures_models", "tests.fixtures_broker", "tests.fixtures_rtsp", "tests.fixtures_disk"]
