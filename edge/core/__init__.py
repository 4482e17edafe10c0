"""Layer 0: the values that flow, settings, wire messages and exit codes; no OpenCV, no runtime."""
