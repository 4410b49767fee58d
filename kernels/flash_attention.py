"""FlashAttention-2 style fused attention in Triton, forward and backward.

Forward: online softmax over key blocks in base 2 (scores pre-scaled by sm_scale * log2(e)), saving the
log-sum-exp per query row. Backward: `delta = rowsum(dO * O)`, then either ("split", the default) one
kernel per key block for dK and dV and one per query block for dQ, both recomputing the probabilities
from the log-sum-exp (7 matmuls per block pair, no atomics), or ("single_pass", FlashAttention-2's)
one kernel per key block that also adds each query block's share of dQ with fp32 atomics (5 matmuls).
Blocks that need no mask (interior blocks, below the causal diagonal) run a loop compiled without masking.

Layout `(batch, heads, seq, head_dim)`; `causal=True` is SDPA's `is_causal=True` (top-left aligned).
"""

from __future__ import annotations

import functools
import inspect
import math
import os

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 128


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


# (BLOCK_M, BLOCK_N, num_warps, num_stages) autotuning candidates for Hopper, by head dim (up to 64, or
# 128), each compiling for sm_90 to wgmma without register spills, causal or not
# (tests/test_flash_attention_compile.py). The forward keeps the winners of two tuning rounds on an H200
# (reports/baselines/nvidia-h200/kernel_configs.json). The backward winners there spilled (up to 7.5 KB
# at head dim 128): these are the nearest spill-free shapes found by compiling, 8 warps at 64 and 16- or
# 64-row blocks at 128 (kernels/README.md has what that cost or gained). Forward and dQ walk key blocks
# inside a query block (BLOCK_M a multiple of BLOCK_N); dK/dV and the single pass the other way round.
TUNED = {
    "fwd": {64: [(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 8, 4)],
            128: [(128, 64, 8, 3), (128, 64, 8, 4), (128, 32, 8, 3)]},
    "dkdv": {64: [(64, 128, 8, 3), (32, 128, 8, 3), (64, 64, 8, 3)],
             128: [(16, 64, 8, 2), (16, 64, 8, 4)]},
    "dq": {64: [(128, 64, 8, 3), (64, 64, 8, 3), (128, 32, 8, 2)],
           128: [(64, 32, 4, 3), (64, 32, 4, 4), (64, 16, 4, 3)]},
    "single_pass": {64: [(64, 64, 8, 3), (32, 128, 8, 3), (32, 64, 4, 3)], 128: [(16, 64, 8, 2)]},
}
# Per kernel, a config small enough for any CUDA GPU's shared memory (the single pass needs 8 warps not
# to spill at head dim 128); also the one config for fp32 inputs, whose IEEE dot runs without tensor
# cores and spills in larger tiles: the fp32 path is there for its numerics, not its speed.
FALLBACK = {"fwd": (32, 32, 4, 1), "dkdv": (32, 32, 4, 1), "dq": (32, 32, 4, 1), "single_pass": (32, 32, 8, 1)}
INTERPRETER = (16, 16, 4, 1)  # the interpreter runs each block in NumPy: one small config
# Tiles a kernel streams through shared memory per pipeline stage (two of them: K and V, or Q and dO),
# and the tiles it keeps resident, by the block dimension each spans.
STREAMED = {"fwd": "BLOCK_N", "dq": "BLOCK_N", "dkdv": "BLOCK_M", "single_pass": "BLOCK_M"}
RESIDENT = {"fwd": ("BLOCK_M",), "dq": ("BLOCK_M", "BLOCK_M"), "dkdv": ("BLOCK_N", "BLOCK_N"),
            "single_pass": ("BLOCK_N", "BLOCK_N")}


def _config(block_m: int, block_n: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=warps, num_stages=stages)


def _shape(config: triton.Config) -> tuple[int, int, int, int]:
    return config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], config.num_warps, config.num_stages


def _configs(kernel: str) -> list[triton.Config]:
    """Every candidate of the kernel, the fallback last; `fitting_configs` picks per head dim and dtype."""
    if _interpreting():
        return [_config(*INTERPRETER)]
    candidates = dict.fromkeys(c for by_head_dim in TUNED[kernel].values() for c in by_head_dim)
    return [_config(*c) for c in [*candidates, FALLBACK[kernel]]]


def shared_bytes(kernel: str, config: triton.Config, head_dim_pad: int, element_size: int) -> int:
    """Shared memory a config of `kernel` should need at most: the streamed tiles in every stage and the
    resident tiles (Triton's own layouts need less; tests/test_flash_attention_compile.py checks)."""
    streamed = 2 * config.num_stages * config.kwargs[STREAMED[kernel]]
    resident = sum(config.kwargs[block] for block in RESIDENT[kernel])
    return (streamed + resident) * head_dim_pad * element_size


def fitting_configs(kernel: str, configs: list[triton.Config], head_dim_pad: int, element_size: int,
                    shared_limit: int) -> list[triton.Config]:
    """The configs worth compiling for this head dim and dtype on a GPU with `shared_limit` bytes per
    block: the head dim's tuned ones that fit (none for fp32), or else the fallback (the last config)."""
    tuned = set(TUNED[kernel][64 if head_dim_pad <= 64 else 128]) if element_size < 4 else set()
    fits = [c for c in configs[:-1] if _shape(c) in tuned
            and shared_bytes(kernel, c, head_dim_pad, element_size) <= shared_limit]
    return fits or configs[-1:]


@functools.cache
def _shared_limit(device_index: int) -> int:
    return triton.runtime.driver.active.utils.get_device_properties(device_index)["max_shared_mem"]


def _pruner(kernel: str) -> dict:
    """Triton's early pruning: drop the configs that cannot fit before any of them is compiled."""
    def prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
        q = named_args["Q"]
        head_dim_pad = {**named_args, **kwargs}["HEAD_DIM_PAD"]
        return fitting_configs(kernel, configs, head_dim_pad, q.element_size(), _shared_limit(q.device.index))

    return {"early_config_prune": prune}


def seqlen_bucket(seqlen: int) -> int:
    """Autotuning is keyed on sequence lengths rounded up to a power of two: seq 1000 reuses 1024's choice."""
    return max(16, triton.next_power_of_2(seqlen))


# Keys of the autotuning cache (the bucketed lengths are arguments the kernels do not read).
TUNING_KEY = ["bucket_q", "bucket_k", "HEAD_DIM", "CAUSAL"]
# Autotuning results kept on disk between processes (Triton >= 3.2), so a second run times the same kernels.
PERSIST = {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters else {}


@triton.jit
def _load_tile(ptrs, rows, n_rows, offs_d, HEAD_DIM: tl.constexpr, CHECK_ROWS: tl.constexpr,
               EVEN_D: tl.constexpr):
    """Load a [rows, head_dim] tile, masking rows past n_rows and padded head-dim columns only if asked."""
    if CHECK_ROWS:
        if EVEN_D:
            tile = tl.load(ptrs, mask=(rows < n_rows)[:, None], other=0.0)
        else:
            tile = tl.load(ptrs, mask=(rows < n_rows)[:, None] & (offs_d < HEAD_DIM)[None, :], other=0.0)
    else:
        if EVEN_D:
            tile = tl.load(ptrs)
        else:
            tile = tl.load(ptrs, mask=(offs_d < HEAD_DIM)[None, :], other=0.0)
    return tile


@triton.jit
def _store_tile(ptrs, tile, rows, n_rows, offs_d, HEAD_DIM: tl.constexpr):
    tl.store(ptrs, tile, mask=(rows < n_rows)[:, None] & (offs_d < HEAD_DIM)[None, :])


@triton.jit
def _key_blocks(start_m, seqlen_k, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Key ranges of a query block: [0, unmasked_hi) needs no mask, [unmasked_hi, masked_hi) does.
    Under a causal mask the keys left of the block are all visible and the diagonal blocks are masked;
    otherwise only the tail block past the last full BLOCK_N is."""
    full_k = (seqlen_k // BLOCK_N) * BLOCK_N
    if CAUSAL:
        unmasked_hi = tl.minimum(start_m, full_k)
        masked_hi = tl.minimum(start_m + BLOCK_M, seqlen_k)
    else:
        unmasked_hi = full_k
        masked_hi = seqlen_k
    return unmasked_hi, masked_hi


@triton.jit
def _attn_fwd_inner(acc, l_i, m_i, q, k_base, v_base, s_kn, s_kd, s_vn, s_vd, offs_m, offs_d, lo, hi,
                    seqlen_k, qk_scale, HEAD_DIM: tl.constexpr, EVEN_D: tl.constexpr, CAUSAL: tl.constexpr,
                    MASK: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_N: tl.constexpr):
    """Online softmax over key blocks [lo, hi); MASK compiles in the key-tail and causal masks."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_tile(k_base + offs_n[:, None] * s_kn + offs_d[None, :] * s_kd, offs_n, seqlen_k, offs_d,
                       HEAD_DIM, MASK, EVEN_D)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        if MASK:
            keep = offs_n[None, :] < seqlen_k
            if CAUSAL:
                keep = keep & (offs_n[None, :] <= offs_m[:, None])
            qk = tl.where(keep, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.exp2(qk - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _load_tile(v_base + offs_n[:, None] * s_vn + offs_d[None, :] * s_vd, offs_n, seqlen_k, offs_d,
                       HEAD_DIM, MASK, EVEN_D)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.autotune(configs=_configs("fwd"), key=TUNING_KEY, prune_configs_by=_pruner("fwd"), **PERSIST)
@triton.jit
def _attn_fwd(Q, K, V, Out, LSE,
              s_qz, s_qh, s_qm, s_qd, s_kz, s_kh, s_kn, s_kd, s_vz, s_vh, s_vn, s_vd,
              n_heads, seqlen_q, seqlen_k, bucket_q, bucket_k, qk_scale,
              HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, EVEN_D: tl.constexpr, CAUSAL: tl.constexpr,
              DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    off_hz = tl.program_id(1)
    off_z = (off_hz // n_heads).to(tl.int64)
    off_h = (off_hz % n_heads).to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    q = _load_tile(Q + off_z * s_qz + off_h * s_qh + offs_m[:, None] * s_qm + offs_d[None, :] * s_qd,
                   offs_m, seqlen_q, offs_d, HEAD_DIM, True, EVEN_D)
    k_base = K + off_z * s_kz + off_h * s_kh
    v_base = V + off_z * s_vz + off_h * s_vh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM_PAD], dtype=tl.float32)
    unmasked_hi, masked_hi = _key_blocks(start_m, seqlen_k, CAUSAL, BLOCK_M, BLOCK_N)
    acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, k_base, v_base, s_kn, s_kd, s_vn, s_vd, offs_m, offs_d,
                                    0, unmasked_hi, seqlen_k, qk_scale, HEAD_DIM, EVEN_D, CAUSAL, False,
                                    DOT_PRECISION, BLOCK_N)
    acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, k_base, v_base, s_kn, s_kd, s_vn, s_vd, offs_m, offs_d,
                                    unmasked_hi, masked_hi, seqlen_k, qk_scale, HEAD_DIM, EVEN_D, CAUSAL, True,
                                    DOT_PRECISION, BLOCK_N)
    out = acc / l_i[:, None]
    out_base = Out + off_hz.to(tl.int64) * seqlen_q * HEAD_DIM
    _store_tile(out_base + offs_m[:, None] * HEAD_DIM + offs_d[None, :], out.to(Out.dtype.element_ty),
                offs_m, seqlen_q, offs_d, HEAD_DIM)
    tl.store(LSE + off_hz.to(tl.int64) * seqlen_q + offs_m, m_i + tl.log2(l_i), mask=offs_m < seqlen_q)


@triton.jit
def _attn_bwd_preprocess(Out, DO, Delta, seqlen_q, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
                         BLOCK_M: tl.constexpr):
    """delta = rowsum(dO * O), per query row; O and dO are contiguous."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    off_hz = tl.program_id(1).to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    offs = off_hz * seqlen_q * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
    mask = (offs_m < seqlen_q)[:, None] & (offs_d < HEAD_DIM)[None, :]
    o = tl.load(Out + offs, mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(Delta + off_hz * seqlen_q + offs_m, tl.sum(o * do, axis=1), mask=offs_m < seqlen_q)


@triton.jit
def _attn_bwd_kv_inner(dk, dv, k, v, q_base, s_qm, s_qd, do_base, dq_base, lse_base, delta_base, offs_n, offs_d,
                       lo, hi, seqlen_q, seqlen_k, qk_scale, HEAD_DIM: tl.constexpr, EVEN_D: tl.constexpr,
                       CAUSAL: tl.constexpr, MASK: tl.constexpr, ATOMIC_DQ: tl.constexpr,
                       DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr):
    """Accumulate dK and dV of one key block over query blocks [lo, hi); with ATOMIC_DQ also add each query
    block's share of dQ (fp32 atomics). Padded query rows load as zeros and contribute nothing, so MASK
    only bounds the loads and applies the causal mask."""
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q = _load_tile(q_base + offs_m[:, None] * s_qm + offs_d[None, :] * s_qd, offs_m, seqlen_q, offs_d,
                       HEAD_DIM, MASK, EVEN_D)
        do = _load_tile(do_base + offs_m[:, None] * HEAD_DIM + offs_d[None, :], offs_m, seqlen_q, offs_d,
                        HEAD_DIM, MASK, EVEN_D)
        if MASK:
            lse = tl.load(lse_base + offs_m, mask=offs_m < seqlen_q, other=0.0)
            delta = tl.load(delta_base + offs_m, mask=offs_m < seqlen_q, other=0.0)
        else:
            lse = tl.load(lse_base + offs_m)
            delta = tl.load(delta_base + offs_m)
        if ATOMIC_DQ:
            # A row's dS sums to ~0 over the keys and dQ sums dS * K over them, so a score rounded unlike the
            # forward's (q @ k^T; k @ q^T may add in another order) shows in dQ: recompute them as it did.
            p_t = tl.trans(tl.exp2(tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale - lse[:, None]))
            # padded keys (zeros) have p = exp2(-lse), inf on very negative rows: keep it out of dQ
            p_t = tl.where(offs_n[:, None] < seqlen_k, p_t, 0.0)
        else:
            p_t = tl.exp2(tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * qk_scale - lse[None, :])
        if MASK and CAUSAL:
            p_t = tl.where(offs_m[None, :] >= offs_n[:, None], p_t, 0.0)
        dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=DOT_PRECISION)
        dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=DOT_PRECISION)
        if ATOMIC_DQ:
            dq = tl.dot(tl.trans(ds_t.to(k.dtype)), k, input_precision=DOT_PRECISION)
            tl.atomic_add(dq_base + offs_m[:, None] * HEAD_DIM + offs_d[None, :], dq,
                          mask=(offs_m < seqlen_q)[:, None] & (offs_d < HEAD_DIM)[None, :])
    return dk, dv


@triton.jit
def _attn_bwd_kv(Q, K, V, DO, DK, DV, DQ_ACC, LSE, Delta,
                 s_qz, s_qh, s_qm, s_qd, s_kz, s_kh, s_kn, s_kd, s_vz, s_vh, s_vn, s_vd,
                 n_heads, seqlen_q, seqlen_k, bucket_q, bucket_k, qk_scale, sm_scale,
                 HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, EVEN_D: tl.constexpr, CAUSAL: tl.constexpr,
                 ATOMIC_DQ: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr):
    """One program per key block: dK and dV, and with ATOMIC_DQ the fp32 sums of dQ in DQ_ACC (the caller
    multiplies them by sm_scale). K is not pre-scaled by sm_scale * log2(e), as Triton's tutorial does: the
    scale is free inside exp2's FMA, and a pre-rounded K makes the recomputed scores drift from the
    forward's (dQ error 3.6e-5 against PyTorch's 6.6e-7 in fp32 on the test with very negative scores)."""
    start_n = tl.program_id(0) * BLOCK_N
    off_hz = tl.program_id(1)
    off_z = (off_hz // n_heads).to(tl.int64)
    off_h = (off_hz % n_heads).to(tl.int64)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    k = _load_tile(K + off_z * s_kz + off_h * s_kh + offs_n[:, None] * s_kn + offs_d[None, :] * s_kd,
                   offs_n, seqlen_k, offs_d, HEAD_DIM, True, EVEN_D)
    v = _load_tile(V + off_z * s_vz + off_h * s_vh + offs_n[:, None] * s_vn + offs_d[None, :] * s_vd,
                   offs_n, seqlen_k, offs_d, HEAD_DIM, True, EVEN_D)
    q_base = Q + off_z * s_qz + off_h * s_qh
    row_base = off_hz.to(tl.int64) * seqlen_q
    do_base = DO + row_base * HEAD_DIM
    dq_base = DQ_ACC + row_base * HEAD_DIM

    dk = tl.zeros([BLOCK_N, HEAD_DIM_PAD], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM_PAD], dtype=tl.float32)
    full_q = (seqlen_q // BLOCK_M) * BLOCK_M
    if CAUSAL:  # queries before this key block never see it; those past its diagonal see all of it
        diag_hi = tl.minimum(start_n + BLOCK_N, seqlen_q)
        dk, dv = _attn_bwd_kv_inner(dk, dv, k, v, q_base, s_qm, s_qd, do_base, dq_base, LSE + row_base,
                                    Delta + row_base, offs_n, offs_d, start_n, diag_hi, seqlen_q, seqlen_k,
                                    qk_scale, HEAD_DIM, EVEN_D, CAUSAL, True, ATOMIC_DQ, DOT_PRECISION, BLOCK_M)
        unmasked_lo = start_n + BLOCK_N
    else:
        unmasked_lo = 0
    dk, dv = _attn_bwd_kv_inner(dk, dv, k, v, q_base, s_qm, s_qd, do_base, dq_base, LSE + row_base,
                                Delta + row_base, offs_n, offs_d, unmasked_lo, full_q, seqlen_q, seqlen_k,
                                qk_scale, HEAD_DIM, EVEN_D, CAUSAL, False, ATOMIC_DQ, DOT_PRECISION, BLOCK_M)
    dk, dv = _attn_bwd_kv_inner(dk, dv, k, v, q_base, s_qm, s_qd, do_base, dq_base, LSE + row_base,
                                Delta + row_base, offs_n, offs_d, tl.maximum(unmasked_lo, full_q), seqlen_q,
                                seqlen_q, seqlen_k, qk_scale, HEAD_DIM, EVEN_D, CAUSAL, True, ATOMIC_DQ,
                                DOT_PRECISION, BLOCK_M)
    grad_base = off_hz.to(tl.int64) * seqlen_k * HEAD_DIM + offs_n[:, None] * HEAD_DIM + offs_d[None, :]
    _store_tile(DK + grad_base, (dk * sm_scale).to(DK.dtype.element_ty), offs_n, seqlen_k, offs_d, HEAD_DIM)
    _store_tile(DV + grad_base, dv.to(DV.dtype.element_ty), offs_n, seqlen_k, offs_d, HEAD_DIM)


# One kernel, two autotuners: the split backward's dK/dV, and the single pass that also sums dQ (zeroed
# before each autotuning trial). ATOMIC_DQ is in the key so that their disk caches never mix.
_attn_bwd_dkdv = triton.autotune(configs=_configs("dkdv"), key=TUNING_KEY + ["ATOMIC_DQ"],
                                 prune_configs_by=_pruner("dkdv"), **PERSIST)(_attn_bwd_kv)
_attn_bwd_single = triton.autotune(configs=_configs("single_pass"), key=TUNING_KEY + ["ATOMIC_DQ"],
                                   prune_configs_by=_pruner("single_pass"), reset_to_zero=["DQ_ACC"],
                                   **PERSIST)(_attn_bwd_kv)


@triton.jit
def _attn_bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, s_kn, s_kd, s_vn, s_vd, offs_m, offs_d, lo, hi,
                       seqlen_k, qk_scale, HEAD_DIM: tl.constexpr, EVEN_D: tl.constexpr, CAUSAL: tl.constexpr,
                       MASK: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_N: tl.constexpr):
    """Accumulate dQ of one query block over key blocks [lo, hi). Padded keys load as zeros, so their
    probability exp2(-lse) is masked to 0: for a row with very negative scores it is inf, and inf * 0 = NaN."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_tile(k_base + offs_n[:, None] * s_kn + offs_d[None, :] * s_kd, offs_n, seqlen_k, offs_d,
                       HEAD_DIM, MASK, EVEN_D)
        v = _load_tile(v_base + offs_n[:, None] * s_vn + offs_d[None, :] * s_vd, offs_n, seqlen_k, offs_d,
                       HEAD_DIM, MASK, EVEN_D)
        p = tl.exp2(tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale - lse[:, None])
        if MASK:
            keep = offs_n[None, :] < seqlen_k
            if CAUSAL:
                keep = keep & (offs_n[None, :] <= offs_m[:, None])
            p = tl.where(keep, p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=DOT_PRECISION)
    return dq


@triton.autotune(configs=_configs("dq"), key=TUNING_KEY, prune_configs_by=_pruner("dq"), **PERSIST)
@triton.jit
def _attn_bwd_dq(Q, K, V, DO, DQ, LSE, Delta,
                 s_qz, s_qh, s_qm, s_qd, s_kz, s_kh, s_kn, s_kd, s_vz, s_vh, s_vn, s_vd,
                 n_heads, seqlen_q, seqlen_k, bucket_q, bucket_k, qk_scale, sm_scale,
                 HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, EVEN_D: tl.constexpr, CAUSAL: tl.constexpr,
                 DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    off_hz = tl.program_id(1)
    off_z = (off_hz // n_heads).to(tl.int64)
    off_h = (off_hz % n_heads).to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    row_base = off_hz.to(tl.int64) * seqlen_q
    q = _load_tile(Q + off_z * s_qz + off_h * s_qh + offs_m[:, None] * s_qm + offs_d[None, :] * s_qd,
                   offs_m, seqlen_q, offs_d, HEAD_DIM, True, EVEN_D)
    rows = row_base * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
    do = _load_tile(DO + rows, offs_m, seqlen_q, offs_d, HEAD_DIM, True, EVEN_D)
    lse = tl.load(LSE + row_base + offs_m, mask=offs_m < seqlen_q, other=0.0)
    delta = tl.load(Delta + row_base + offs_m, mask=offs_m < seqlen_q, other=0.0)
    k_base = K + off_z * s_kz + off_h * s_kh
    v_base = V + off_z * s_vz + off_h * s_vh

    dq = tl.zeros([BLOCK_M, HEAD_DIM_PAD], dtype=tl.float32)
    unmasked_hi, masked_hi = _key_blocks(start_m, seqlen_k, CAUSAL, BLOCK_M, BLOCK_N)
    dq = _attn_bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, s_kn, s_kd, s_vn, s_vd, offs_m, offs_d,
                            0, unmasked_hi, seqlen_k, qk_scale, HEAD_DIM, EVEN_D, CAUSAL, False, DOT_PRECISION,
                            BLOCK_N)
    dq = _attn_bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, s_kn, s_kd, s_vn, s_vd, offs_m, offs_d,
                            unmasked_hi, masked_hi, seqlen_k, qk_scale, HEAD_DIM, EVEN_D, CAUSAL, True,
                            DOT_PRECISION, BLOCK_N)
    _store_tile(DQ + rows, (dq * sm_scale).to(DQ.dtype.element_ty), offs_m, seqlen_q, offs_d, HEAD_DIM)


def shape_constexprs(dtype: torch.dtype, head_dim: int, causal: bool) -> dict:
    """The constexpr arguments every kernel shares: head dim (padded to a power of two), the mask, and the
    dot precision (IEEE for fp32 inputs, so fp32 results match PyTorch's fp32 rather than TF32)."""
    padded = max(16, triton.next_power_of_2(head_dim))
    return {"HEAD_DIM": head_dim, "HEAD_DIM_PAD": padded, "EVEN_D": head_dim == padded, "CAUSAL": causal,
            "DOT_PRECISION": "ieee" if dtype == torch.float32 else "tf32"}


AUTOTUNED = {"fwd": _attn_fwd, "dkdv": _attn_bwd_dkdv, "dq": _attn_bwd_dq, "single_pass": _attn_bwd_single}
# The constexprs that tell the two uses of the key-block backward kernel apart.
FIXED_CONSTEXPRS = {"dkdv": {"ATOMIC_DQ": False}, "single_pass": {"ATOMIC_DQ": True}}
BACKWARDS = {"split": ("dkdv", "dq"), "single_pass": ("single_pass",)}  # each backward's kernels


def forget_configs() -> None:
    """Clear what `last_configs` reports, before a new case."""
    for kernel in AUTOTUNED.values():
        kernel.best_config = None


def last_configs() -> dict[str, str]:
    """The config each kernel last ran with (autotuned, or read from the cache), by kernel."""
    return {name: str(kernel.best_config) for name, kernel in AUTOTUNED.items()
            if getattr(kernel, "best_config", None) is not None}


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal: bool, sm_scale: float, backward: str):
        batch, heads, seqlen_q, _ = q.shape
        seqlen_k = k.shape[2]
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        lse = torch.empty((batch * heads, seqlen_q), dtype=torch.float32, device=q.device)
        shape = shape_constexprs(q.dtype, q.shape[-1], causal)

        def grid(meta):
            return triton.cdiv(seqlen_q, meta["BLOCK_M"]), batch * heads

        _attn_fwd[grid](q, k, v, out, lse, *q.stride(), *k.stride(), *v.stride(), heads, seqlen_q, seqlen_k,
                        seqlen_bucket(seqlen_q), seqlen_bucket(seqlen_k), sm_scale * LOG2E, **shape)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal, ctx.sm_scale, ctx.backward = causal, sm_scale, backward
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        batch, heads, seqlen_q, head_dim = q.shape
        seqlen_k = k.shape[2]
        grad_out = grad_out.contiguous()
        shape = shape_constexprs(q.dtype, head_dim, ctx.causal)
        delta = torch.empty_like(lse)
        rows_per_block = 64
        _attn_bwd_preprocess[(triton.cdiv(seqlen_q, rows_per_block), batch * heads)](
            out, grad_out, delta, seqlen_q, head_dim, shape["HEAD_DIM_PAD"], rows_per_block)

        dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
        dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
        args = (*q.stride(), *k.stride(), *v.stride(), heads, seqlen_q, seqlen_k, seqlen_bucket(seqlen_q),
                seqlen_bucket(seqlen_k), ctx.sm_scale * LOG2E, ctx.sm_scale)

        def key_blocks(meta):
            return triton.cdiv(seqlen_k, meta["BLOCK_N"]), batch * heads

        if ctx.backward == "single_pass":
            dq_sums = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
            _attn_bwd_single[key_blocks](q, k, v, grad_out, dk, dv, dq_sums, lse, delta, *args, **shape,
                                         **FIXED_CONSTEXPRS["single_pass"])
            return (dq_sums * ctx.sm_scale).to(q.dtype), dk, dv, None, None, None
        dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        _attn_bwd_dkdv[key_blocks](q, k, v, grad_out, dk, dv, lse, lse, delta, *args, **shape,
                                   **FIXED_CONSTEXPRS["dkdv"])  # lse stands in for the unused DQ_ACC
        _attn_bwd_dq[lambda meta: (triton.cdiv(seqlen_q, meta["BLOCK_M"]), batch * heads)](
            q, k, v, grad_out, dq, lse, delta, *args, **shape)
        return dq, dk, dv, None, None, None


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sm_scale: float | None) -> None:
    """Raise ValueError, before any launch, for inputs the kernels do not handle."""
    tensors = {"q": q, "k": k, "v": v}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have 4 dims (batch, heads, seq, head_dim), got shape {tuple(t.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.dtype not in DTYPES:
        raise ValueError(f"dtype {q.dtype} is not supported; use float16, bfloat16 or float32")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device}, {v.device}")
    if q.device.type != "cuda" and not (q.device.type == "cpu" and _interpreting()):
        raise ValueError(f"tensors on {q.device} need a CUDA GPU (or TRITON_INTERPRET=1 for CPU tensors)")
    if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3]:
        raise ValueError(f"shapes do not match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} "
                         "(batch and heads must agree; k and v must share seqlen_k)")
    head_dim = q.shape[-1]
    if k.shape[-1] != head_dim or v.shape[-1] != head_dim:
        raise ValueError(f"q, k and v must share head_dim, got {head_dim}, {k.shape[-1]}, {v.shape[-1]}")
    if head_dim % 8 or not 8 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"head_dim {head_dim} is not supported; use a multiple of 8 up to {MAX_HEAD_DIM}")
    if min(q.shape) == 0 or k.shape[2] == 0:
        raise ValueError(f"empty input: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if sm_scale is not None and not (isinstance(sm_scale, (int, float)) and sm_scale > 0):
        raise ValueError(f"sm_scale must be a positive number, got {sm_scale!r}")


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                    sm_scale: float | None = None, backward: str = "split") -> torch.Tensor:
    """softmax(q @ k^T * sm_scale [+ causal mask]) @ v, fused; differentiable in q, k and v.

    `(batch, heads, seq, head_dim)` tensors of one dtype (fp16, bf16 or fp32; fp32 accumulation), any
    sequence lengths (seqlen_q may differ from seqlen_k), head_dim a multiple of 8 up to 128, any strides.
    `sm_scale` defaults to 1/sqrt(head_dim). `backward` is "split" (dK/dV and dQ in two kernels) or
    "single_pass" (FlashAttention-2's, dQ summed with atomics). Raises ValueError for anything else.
    """
    _check_inputs(q, k, v, sm_scale)
    if backward not in BACKWARDS:
        raise ValueError(f"backward {backward!r} is not one of {', '.join(BACKWARDS)}")
    scale = float(sm_scale) if sm_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    return _FlashAttention.apply(q, k, v, bool(causal), scale, backward)
