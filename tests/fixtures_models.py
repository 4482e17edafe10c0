"""Model fixtures: a generated dataset, a tiny trained model and its bundles (session scoped)."""
