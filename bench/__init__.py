"""archbench: forward/backward benchmarks of PyTorch architectures, with reports under reports/."""
