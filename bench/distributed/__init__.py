"""Data-parallel scaling: the training step under torchrun at each world size."""
