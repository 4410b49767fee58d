"""The model registry: name -> ModelSpec. Adding a model is one file and one line here."""

from bench.sweep.models import cnn, rnn, transformer, vision
from bench.sweep.models.spec import SIZES, Batch, ModelSpec

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (cnn.SPEC, rnn.rnn_spec("lstm"), rnn.rnn_spec("gru"), transformer.ENCODER, transformer.DECODER,
                 *vision.SPECS)
}

__all__ = ["MODELS", "SIZES", "Batch", "ModelSpec"]
