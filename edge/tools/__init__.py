"""Layer 3: offline tools over recordings: replay, calibrate, their pictures and the config edit."""
