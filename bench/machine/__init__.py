"""The machine: its fingerprint, measured peaks, GPU clocks, and the validation of a new machine."""
