"""The attention registry: implementations agree with each other, and say why they cannot run."""

import pytest
import torch

from bench.sweep.attention import ATTENTION, TRITON_BACKWARDS, attention_flops, naive

CPU = torch.device("cpu")


def qkv(seqlen_q: int, seqlen_k: int, head_dim: int = 32, dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, seqlen_q, head_dim, generator=gen, dtype=dtype)
    k, v = (torch.randn(2, 3, seqlen_k, head_dim, generator=gen, dtype=dtype) for _ in range(2))
    return q, k, v


def runnable_here(dtype=torch.float64, head_dim=32):
    return [name for name, impl in ATTENTION.items()
            if name != "naive" and impl.unavailable(CPU, dtype, head_dim, causal=True) is None]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("seqlen_q", "seqlen_k"), [(17, 17), (9, 23), (23, 9)])
def test_naive_and_sdpa_agree(seqlen_q, seqlen_k, causal):
    q, k, v = qkv(seqlen_q, seqlen_k)
    reference = naive(q, k, v, causal=causal)
    names = runnable_here()
    assert {"sdpa", "sdpa_math"} <= set(names)
    for name in names:
        torch.testing.assert_close(ATTENTION[name].fn(q, k, v, causal=causal), reference, rtol=1e-10, atol=1e-10)


def test_naive_causal_mask_is_sdpa_top_left_mask():
    q, k, v = qkv(4, 6)
    out = naive(q, k, v, causal=True)
    # Row 0 may only see key 0 (top-left alignment), so it returns v[..., 0, :] exactly.
    torch.testing.assert_close(out[..., 0, :], v[..., 0, :])


def test_unavailable_implementations_give_a_reason_on_cpu():
    assert ATTENTION["triton"].unavailable(CPU, torch.bfloat16, 32, causal=False) == "triton needs a CUDA GPU"
    reason = ATTENTION["sdpa_cudnn"].unavailable(CPU, torch.bfloat16, 32, causal=False)
    assert reason.startswith("sdpa_cudnn has no kernel for bfloat16 head_dim=32 on cpu")
    assert ATTENTION["sdpa_math"].unavailable(CPU, torch.bfloat16, 32, causal=True) is None


def test_attention_flops_follow_flashattention_convention():
    full = attention_flops(2, 4, 128, 256, 64, causal=False)
    assert full == 4 * 2 * 4 * 128 * 256 * 64
    assert attention_flops(2, 4, 128, 256, 64, causal=True) == full // 2
    assert attention_flops(2, 4, 128, 256, 64, causal=False, with_backward=True) == full * 7 // 2


def test_override_runs_another_implementation_inside_the_block_only(monkeypatch):
    from bench.sweep import attention

    calls = []
    monkeypatch.setitem(ATTENTION, "spy", attention.AttentionImpl("spy", lambda q, k, v, causal: calls.append(causal)))
    q, k, v = qkv(5, 5)
    with attention.override("spy") as recorded:
        attention.attend("sdpa", q, k, v, causal=True)
        attention.attend("sdpa", q, k[:, :, :3], v[:, :, :3], causal=False)
    assert calls == [True, False]
    batch, heads, _, head_dim = q.shape
    assert recorded == [(batch, heads, 5, 5, head_dim, True), (batch, heads, 5, 3, head_dim, False)]
    torch.testing.assert_close(attention.attend("sdpa", q, k, v, causal=False), naive(q, k, v, causal=False))
    assert calls == [True, False]  # restored after the block
    with pytest.raises(KeyError, match="unknown attention implementation 'flash'"), attention.override("flash"):
        pass


def test_every_triton_implementation_runs_one_of_the_kernel_s_backwards():
    from kernels.flash_attention import BACKWARDS

    assert sorted(TRITON_BACKWARDS.values()) == sorted(BACKWARDS)  # each backward timed, under one name
    assert all(ATTENTION[name].needs_cuda for name in TRITON_BACKWARDS)
