"""The Triton kernel against a float64 reference, on the CPU through Triton's interpreter.

Tolerance, the way FlashAttention's tests set it: the kernel's largest error against float64 may be at
most a small multiple of the largest error of PyTorch's own attention computed in the same dtype.
"""


import numpy as np
import pytest
import torch
import triton
from triton.runtime import interpreter

import kernels.flash_attention as flash_attention_module
from kernels.flash_attention import flash_attention

ERROR_MULTIPLE = 3  # FlashAttention's tests use 2 for the output; gradients pile up more rounding

# The kernel computes in fp32: where PyTorch's error is exactly 0 (a row that sees a single key), the
# kernel's exp2 and delta may still round a few fp32 ulps.
FLOOR = 1e-6

# (seqlen_q, seqlen_k, head_dim): tails past the interpreter's 16-wide blocks, seqlen_q != seqlen_k both ways.
SHAPES = [(37, 37, 16), (50, 29, 40), (29, 50, 64), (1, 17, 16)]
DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def inputs(seqlen_q, seqlen_k, head_dim, batch=2, heads=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, seqlen_q, head_dim, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(batch, heads, seqlen_k, head_dim, generator=gen, dtype=torch.float64) for _ in range(2))
    grad = torch.randn(batch, heads, seqlen_q, head_dim, generator=gen, dtype=torch.float64)
    return (q, k, v), grad


def output_and_grads(attn, qkv, grad, dtype, causal):
    leaves = [t.detach().to(dtype).requires_grad_() for t in qkv]
    out = attn(*leaves, causal=causal)
    out.backward(grad.to(dtype))
    return [out.detach()] + [t.grad for t in leaves]


def assert_matches_reference(qkv, grad, dtype, causal, sm_scale=None, backward="split"):
    """Output and gradients of the kernel within ERROR_MULTIPLE of PyTorch's own error in `dtype`."""
    def reference_attention(q, k, v, causal):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=sm_scale)

    def kernel_attention(q, k, v, causal):
        return flash_attention(q, k, v, causal=causal, sm_scale=sm_scale, backward=backward)

    reference = output_and_grads(reference_attention, qkv, grad, torch.float64, causal)
    torch_low = output_and_grads(reference_attention, qkv, grad, dtype, causal)
    kernel = output_and_grads(kernel_attention, qkv, grad, dtype, causal)
    for name, ref, low, ours in zip(["out", "dq", "dk", "dv"], reference, torch_low, kernel, strict=True):
        assert ours.dtype == dtype and ours.shape == ref.shape
        ours_err = (ours.double() - ref).abs().max().item()
        torch_err = (low.double() - ref).abs().max().item()
        assert ours_err <= ERROR_MULTIPLE * torch_err + FLOOR, f"{name}: {ours_err:.2e} vs {torch_err:.2e}"


@pytest.mark.parametrize("backward", flash_attention_module.BACKWARDS)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize(("seqlen_q", "seqlen_k", "head_dim"), SHAPES, ids=lambda x: str(x))
def test_forward_and_gradients_match_float64_reference(seqlen_q, seqlen_k, head_dim, dtype, causal, backward):
    assert_matches_reference(*inputs(seqlen_q, seqlen_k, head_dim), dtype, causal, backward=backward)


@pytest.mark.parametrize("descriptors", [False, True], ids=["pointers", "descriptors"])
@pytest.mark.parametrize("backward", flash_attention_module.BACKWARDS)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize(("seqlen_q", "seqlen_k"), [(17, 17), (20, 33), (33, 20)], ids=str)
def test_gradients_stay_finite_where_scores_are_very_negative(seqlen_q, seqlen_k, causal, backward, descriptors):
    """Keys past a sequence's last full block load as zeros (through pointers or descriptors); where every
    real score is far below 0, the probability exp2(0 - lse) of such a padded key is inf, and it must not
    reach a gradient (inf * 0 = NaN)."""
    gen = torch.Generator().manual_seed(0)
    q = torch.full((1, 1, seqlen_q, 16), -5.0, dtype=torch.float64)
    k = 5.0 + 0.01 * torch.randn(1, 1, seqlen_k, 16, generator=gen, dtype=torch.float64)
    v, grad = torch.randn(1, 1, seqlen_k, 16, generator=gen), torch.randn(1, 1, seqlen_q, 16, generator=gen)
    with flash_attention_module.variant(descriptors=descriptors):
        assert_matches_reference((q, k, v.double()), grad.double(), torch.float32, causal, backward=backward)


@pytest.fixture
def dot_adding_in_its_left_operands_order(monkeypatch):
    """tl.dot adding its products in an order set by its left operand, as a BLAS kernel may (numpy's OpenBLAS
    rounds q @ k^T and (k @ q^T)^T apart with its AVX2 kernel, not with its AVX-512 one): the same scores
    recomputed with the operands swapped then differ in their last bits, on any CPU."""
    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        left, right = a.data.astype(np.float32), b.data.astype(np.float32)
        acc = d.data.astype(np.float32)
        for i in np.argsort(left.sum(axis=0), kind="stable"):
            acc = acc + np.outer(left[:, i], right[i])
        return interpreter.TensorHandle(acc.astype(d.data.dtype), d.dtype.scalar)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_dot", create_dot)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize(("seqlen_q", "seqlen_k"), [(17, 17), (33, 20)], ids=str)
def test_single_pass_dq_does_not_depend_on_the_order_a_dot_adds_in(dot_adding_in_its_left_operands_order,
                                                                   seqlen_q, seqlen_k, causal):
    """Where every score of a row is about -100 and the keys share a large mean, dQ = dS @ K cancels: a row's
    dS sums to ~0. The single pass's recomputed probabilities must round as the forward's did, or their
    difference (~1e-5 relative) reaches dQ 20-30x above PyTorch's own error."""
    test_gradients_stay_finite_where_scores_are_very_negative(seqlen_q, seqlen_k, causal, "single_pass", False)


@pytest.fixture
def unequal_blocks(monkeypatch):
    """Blocks of 64 queries x 32 keys in the forward and dQ kernels, 32 x 64 in dK/dV and the single pass
    (each kernel's block of its own rows is the larger): causal ranges then depend on which block size
    they use."""
    def only(kernel, block_m, block_n):
        monkeypatch.setattr(kernel, "configs", [triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n},
                                                              num_warps=4, num_stages=1)])

    only(flash_attention_module._attn_fwd, 64, 32)
    only(flash_attention_module._attn_bwd_dq, 64, 32)
    only(flash_attention_module._attn_bwd_dkdv, 32, 64)
    only(flash_attention_module._attn_bwd_single, 32, 64)
    flash_attention_module.forget_configs()  # plans replay the configs they were made with
    yield
    flash_attention_module.forget_configs()


@pytest.mark.parametrize("backward", flash_attention_module.BACKWARDS)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize(("seqlen_q", "seqlen_k", "head_dim"), [(150, 150, 16), (100, 170, 32), (170, 90, 16)],
                         ids=lambda x: str(x))
def test_unequal_query_and_key_blocks_match_the_reference(unequal_blocks, seqlen_q, seqlen_k, head_dim, dtype,
                                                          causal, backward):
    assert_matches_reference(*inputs(seqlen_q, seqlen_k, head_dim, batch=1), dtype, causal, backward=backward)


@pytest.mark.parametrize("descriptors", [False, True], ids=["pointers", "descriptors"])
@pytest.mark.parametrize("backward", flash_attention_module.BACKWARDS)
@pytest.mark.parametrize(("seqlen_q", "seqlen_k"), [(150, 150), (100, 170), (170, 90)], ids=str)
def test_the_diagonal_in_half_blocks_matches_the_reference(unequal_blocks, seqlen_q, seqlen_k, backward,
                                                           descriptors):
    """dK/dV's 32-row query blocks step the 64-key diagonal 16 rows at a time, and dQ's 32-key blocks
    step its diagonal 16 keys at a time (through descriptors of the half blocks, or pointers)."""
    with flash_attention_module.variant(half_diagonal=True, descriptors=descriptors):
        assert_matches_reference(*inputs(seqlen_q, seqlen_k, 16, batch=1), torch.float16, True, backward=backward)


# Each of the variant's switches flipped from its default (descriptors: the interpreter loads through them,
# and tests/conftest.py gives it the atomic add it lacks).
FLIPPED = [{name: not getattr(flash_attention_module.VARIANT, name)}
           for name in flash_attention_module.Variant.__dataclass_fields__]


@pytest.mark.parametrize("backward", flash_attention_module.BACKWARDS)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("changes", FLIPPED, ids=lambda changes: "-".join(f"{k}={v}" for k, v in changes.items()))
def test_every_variant_matches_the_reference(changes, causal, backward):
    """Padded head dim (40 in 64 columns) and tails, seqlen_q below and above seqlen_k, in both 16-bit dtypes."""
    with flash_attention_module.variant(**changes):
        assert_matches_reference(*inputs(50, 29, 40), torch.float16, causal, backward=backward)
        assert_matches_reference(*inputs(29, 50, 64), torch.bfloat16, causal, backward=backward)


def test_descriptors_fall_back_to_pointers_where_strides_do_not_allow_them():
    """A view two bytes past an aligned base cannot be read by TMA; the same values must come out."""
    (q, k, v), grad = inputs(37, 37, 16)
    wide = torch.cat([q[..., :1], q], dim=-1).to(torch.float16)
    shifted = wide[..., 1:]
    with flash_attention_module.variant(descriptors=True):
        assert flash_attention_module._descriptors(q.to(torch.float16))
        assert shifted.data_ptr() % 16 and not flash_attention_module._descriptors(shifted)
        got = flash_attention(shifted, k.half(), v.half())
        expected = flash_attention(q.half(), k.half(), v.half())
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.fixture
def autotuner_calls(monkeypatch):
    """How many times each kernel went through its autotuner (Triton's own launch path)."""
    calls = {}
    for name, kernel in flash_attention_module.AUTOTUNED.items():
        def counted(*args, _run=kernel.run, _name=name, **kwargs):
            calls[_name] = calls.get(_name, 0) + 1
            return _run(*args, **kwargs)

        monkeypatch.setattr(kernel, "run", counted)
    flash_attention_module.forget_configs()
    return calls


def test_a_plan_replays_the_first_calls_launches_without_the_autotuner(autotuner_calls):
    (q, k, v), grad = inputs(37, 29, 16)
    first, again = (output_and_grads(flash_attention, (q, k, v), grad, torch.float16, True) for _ in range(2))
    assert autotuner_calls == {"fwd": 1, "dkdv": 1, "dq": 1}
    for planned, replayed in zip(first, again, strict=True):
        torch.testing.assert_close(replayed, planned, rtol=0, atol=0)
    assert set(flash_attention_module.last_configs()) == {"fwd", "dkdv", "dq"}
    output_and_grads(flash_attention, (q.transpose(-1, -2).contiguous().transpose(-1, -2), k, v), grad,
                     torch.float16, True)  # other strides: a new plan
    assert autotuner_calls == {"fwd": 2, "dkdv": 2, "dq": 2}
    flash_attention_module.forget_configs()  # plans forgotten: the next call plans again
    output_and_grads(flash_attention, (q, k, v), grad, torch.float16, True)
    assert autotuner_calls == {"fwd": 3, "dkdv": 3, "dq": 3}


def test_a_plan_launches_the_grid_of_the_config_the_autotuner_chose(monkeypatch):
    """Two forward configs, the autotuner's timings stubbed so that the second (16-row blocks) wins: the
    replay must launch that config's grid, not the first's (32-row blocks: half the programs)."""
    kernel = flash_attention_module._attn_fwd
    wide, narrow = (triton.Config({"BLOCK_M": rows, "BLOCK_N": 16}, num_warps=4, num_stages=1) for rows in (32, 16))
    monkeypatch.setattr(kernel, "configs", [wide, narrow])
    monkeypatch.setattr(kernel, "early_config_prune", None)  # it asks a GPU for its shared memory
    monkeypatch.setattr(kernel, "cache_results", False)
    monkeypatch.setattr(kernel, "cache", {})
    monkeypatch.setattr(kernel, "_bench", lambda *args, config, **meta: [0.0 if config is narrow else 1.0])
    flash_attention_module.forget_configs()
    q, k, v = (t.half() for t in inputs(50, 40, 16)[0])
    expected = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float()).half()
    with torch.no_grad():
        planned, replayed = (flash_attention(q, k, v) for _ in range(2))
    assert kernel.best_config is narrow
    flash_attention_module.forget_configs()  # the plan holds the stubbed choice
    torch.testing.assert_close(planned, expected, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(replayed, planned, rtol=0, atol=0)


def test_without_plans_every_call_goes_through_the_autotuner(autotuner_calls):
    (q, k, v), grad = inputs(37, 29, 16)
    with flash_attention_module.variant(plans=False):
        for _ in range(2):
            output_and_grads(flash_attention, (q, k, v), grad, torch.float16, False)
    assert autotuner_calls == {"fwd": 2, "dkdv": 2, "dq": 2}


@pytest.mark.parametrize("backward", flash_attention_module.BACKWARDS)
def test_torch_compile_traces_the_kernel_as_one_operator(backward):
    """fullgraph: no graph break; the graph holds archbench::flash_attention, and its registered backward
    gives the eager gradients. (Dynamo's eager backend: under Triton's interpreter torch.compile cannot see
    through wrap_triton; the inductor path runs in tests/test_gpu.py.)"""
    (q, k, v), grad = inputs(37, 29, 16)
    graphs = []

    def backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    def attention(q, k, v, causal):
        return flash_attention(q, k, v, causal=causal, backward=backward)

    compiled = torch.compile(attention, backend=backend, fullgraph=True)
    eager = output_and_grads(attention, (q, k, v), grad, torch.float16, True)
    traced = output_and_grads(compiled, (q, k, v), grad, torch.float16, True)
    for expected, got in zip(eager, traced, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert "archbench.flash_attention" in str(graphs[0].graph)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_sm_scale_reaches_the_gradients(causal):
    assert_matches_reference(*inputs(37, 29, 16), torch.float32, causal, sm_scale=0.3)


def test_strided_inputs_give_the_contiguous_result():
    gen = torch.Generator().manual_seed(1)
    qkv = torch.randn(2, 21, 3, 2, 16, generator=gen).permute(2, 0, 3, 1, 4)  # as a fused projection makes
    q, k, v = (t.requires_grad_() for t in qkv.unbind(0))
    assert not q.is_contiguous()
    out = flash_attention(q, k, v, causal=True)
    out.sum().backward()
    dense = [t.detach().contiguous().requires_grad_() for t in (q, k, v)]
    out_dense = flash_attention(*dense, causal=True)
    out_dense.sum().backward()
    torch.testing.assert_close(out, out_dense)
    for strided, contiguous in zip((q, k, v), dense, strict=True):
        torch.testing.assert_close(strided.grad, contiguous.grad)


def test_sm_scale_is_applied():
    (q, k, v), _ = inputs(9, 9, 16)
    q, k, v = (t.float() for t in (q, k, v))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.5)
    torch.testing.assert_close(flash_attention(q, k, v, sm_scale=0.5), expected, rtol=1e-5, atol=1e-5)


def rand(*shape, dtype=torch.float16, device="cpu"):
    return torch.randn(*shape).to(dtype=dtype, device=device)


GOOD = rand(1, 2, 8, 16)


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((rand(2, 8, 16), GOOD, GOOD), {}, "q must have 4 dims"),
    ((GOOD, [1.0], GOOD), {}, "k must be a torch.Tensor"),
    ((GOOD, rand(1, 2, 8, 16, dtype=torch.bfloat16), GOOD), {}, "must share a dtype"),
    ((rand(1, 2, 8, 16, dtype=torch.float64),) * 3, {}, "dtype torch.float64 is not supported"),
    ((GOOD, rand(1, 3, 8, 16), rand(1, 3, 8, 16)), {}, "shapes do not match"),
    ((GOOD, GOOD, rand(1, 2, 9, 16)), {}, "shapes do not match"),
    ((GOOD, rand(1, 2, 8, 24), rand(1, 2, 8, 24)), {}, "must share head_dim"),
    ((rand(1, 2, 8, 12),) * 3, {}, "head_dim 12 is not supported"),
    ((rand(1, 2, 8, 136),) * 3, {}, "head_dim 136 is not supported"),
    ((rand(1, 2, 0, 16),) * 3, {}, "empty input"),
    ((GOOD, GOOD, GOOD), {"sm_scale": -1.0}, "sm_scale must be a positive number"),
    ((GOOD, GOOD, GOOD), {"backward": "fused"}, "backward 'fused' is not one of split, single_pass"),
    ((GOOD, GOOD, rand(1, 2, 8, 16, device="meta")), {}, "must be on one device"),
    ((rand(1, 2, 8, 16, device="meta"),) * 3, {}, "need a CUDA GPU"),
])
def test_unsupported_inputs_raise_value_error_saying_why(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        flash_attention(*args, **kwargs)


def test_cpu_tensors_without_the_interpreter_raise(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="need a CUDA GPU"):
        flash_attention(GOOD, GOOD, GOOD)


@pytest.mark.parametrize("causal", [False, True], ids=["encoder", "decoder"])
def test_transformer_models_run_with_the_triton_attention(causal):
    """The registry's `triton` entry inside a model: permuted QKV views, the backward through four layers."""
    from bench.sweep.models.transformer import MiniTransformer, TransformerConfig

    tokens = torch.randint(0, 10_000, (2, 20), generator=torch.Generator().manual_seed(0))
    grads = {}
    for attn in ("triton", "sdpa"):
        torch.manual_seed(0)
        model = MiniTransformer(TransformerConfig(dropout=0.0), attn, causal=causal)
        out = model(tokens)
        out.float().pow(2).mean().backward()
        grads[attn] = (out.detach(), model.blocks[0].attn.qkv_proj.weight.grad)
    torch.testing.assert_close(grads["triton"][0], grads["sdpa"][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grads["triton"][1], grads["sdpa"][1], rtol=1e-4, atol=1e-4)
