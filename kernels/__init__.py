"""archbench's Triton kernels: kernels/flash_attention.py, the fused attention (see kernels/README.md)."""
