"""Layer 1: the pure steps of a camera's chain, each taking the previous value and returning its own."""
