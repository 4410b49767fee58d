"""torchvision's ResNet-50, EfficientNet-B0, ConvNeXt-Tiny and ViT-B/16, untrained (`weights=None`).

The quick size feeds 64x64 images (ViT built for that resolution) so a CPU sweep stays short; the full
size is ImageNet's 224x224.
"""

from __future__ import annotations

from bench.sweep.models.spec import ModelSpec, image_batch

RESOLUTION = {"quick": 64, "full": 224}
BATCH_SIZES = {"quick": (1, 4), "full": (64, 256)}


def torchvision_builder(name: str):
    """A builder that imports torchvision only when a model is built."""

    def build(size: str, attn: str | None):
        import torchvision

        extra = {"image_size": RESOLUTION[size]} if name.startswith("vit") else {}
        return torchvision.models.get_model(name, weights=None, **extra)

    return build


SPECS = [
    ModelSpec(name=name, build=torchvision_builder(name), batch=image_batch(RESOLUTION, 1000),
              batch_sizes=BATCH_SIZES, convolutional=not name.startswith("vit"))
    for name in ("resnet50", "efficientnet_b0", "convnext_tiny", "vit_b_16")
]
