"""Layer 3: setting a device up (install, uninstall) and checking it (check)."""
