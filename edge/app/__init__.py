"""Layer 3: the programs: the daemon that supervises camera workers, and the command line."""
