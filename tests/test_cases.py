"""The sweep: case ids, the combinations the options ask for, and skip reasons."""

import torch

from bench.sweep.cases import AttentionCase, Case, attention_sweep, sweep

CPU = torch.device("cpu")


def test_case_ids_name_every_axis():
    assert Case("cnn", "fwd", "fp32", 8).id == "cnn-fwd-fp32-b8"
    assert Case("encoder", "fwdbwd", "amp_bf16", 4, "sdpa").id == "encoder-fwdbwd-amp_bf16-b4-sdpa"
    micro = AttentionCase("triton", "fwdbwd", "bf16", 256, 64, True, 2, 4)
    assert micro.id == "attn-fwdbwd-bf16-causal-d64-s256-triton" and micro.torch_dtype == torch.bfloat16
    assert (Case.kind, AttentionCase.kind) == ("model", "attention")


def test_attention_varies_only_for_models_that_have_it_and_batches_default_per_model():
    cases = sweep(["cnn", "encoder"], ["fwd"], ["fp32", "amp_bf16"], None, ["naive", "sdpa"], "quick")
    assert len([c for c in cases if c.model == "cnn"]) == 2 * 2  # precisions x the cnn's two quick batches
    assert {c.attention for c in cases if c.model == "cnn"} == {None}
    assert len([c for c in cases if c.model == "encoder"]) == 2 * 2 * 2
    assert sweep(["cnn"], ["fwd"], ["fp32"], [3], ["naive"], "full") == [Case("cnn", "fwd", "fp32", 3, None, "full")]


def test_attention_sweep_covers_dtypes_masks_head_dims_and_lengths_without_step():
    cases = attention_sweep(["naive"], ["fwd", "step"], "quick")
    assert len(cases) == 2 * 2 * 2 * 2  # fp16/bf16 x causal or not x 2 head dims x 2 lengths; no step
    assert {c.phase for c in cases} == {"fwd"} and {c.precision for c in cases} == {"fp16", "bf16"}


def test_skip_reasons_come_from_precision_then_attention():
    assert Case("encoder", "fwd", "fp32", 2, "triton").unavailable(CPU) == "triton needs a CUDA GPU"
    assert Case("cnn", "fwd", "fp32", 2).unavailable(CPU) is None
    assert AttentionCase("triton", "fwd", "fp16", 128, 64, False, 2, 4).unavailable(CPU) == "triton needs a CUDA GPU"
