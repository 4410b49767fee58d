"""FlashAttention-2 style fused attention in Triton, forward and backward.

Forward: online softmax over key blocks in base 2 (the max taken on the raw scores, then one FMA a score
with sm_scale * log2(e)), saving the log-sum-exp per query row. Backward: `delta = rowsum(dO * O)`, then
either ("split", the default) one kernel per key block for dK and dV and one per query block for dQ, both
recomputing the probabilities from the log-sum-exp (7 matmuls per block pair, no atomics), or
("single_pass", FlashAttention-2's) one kernel per key block that also adds each query block's share of dQ
into fp32 with atomics (5 matmuls). Blocks that need no mask (interior blocks, below the causal diagonal)
run a loop compiled without masking. Tiles load through pointers, or through tensor descriptors (TMA) on
Hopper where the strides allow (`Variant.descriptors`).

Layout `(batch, heads, seq, head_dim)`; `causal=True` is SDPA's `is_causal=True` (top-left aligned).
Host side: each call signature's launches are planned once and replayed (kernels/plans.py); under
torch.compile the kernels are traced through `torch.library.triton_op`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
import os
from collections.abc import Iterator

import torch
import triton
import triton.language as tl

from kernels.plans import Launch, Plans, dispatch, traced

LOG2E = 1.4426950408889634
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 128


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@dataclasses.dataclass(frozen=True)
class Variant:
    """Switches for the kernel's Hopper changes, so that each can be timed against its other setting in one
    process (kernels/hopper_ab.py). Defaults: what measurements chose, or the change where none exists yet
    (kernels/README.md says which)."""

    descriptors: bool = False  # tiles loaded through tensor descriptors (TMA) on sm_90+, where strides allow
    heavy_first: bool = True  # causal grids ordered heaviest blocks first, heads fastest (LPT)
    half_diagonal: bool = False  # causal backward: the masked diagonal stepped in half blocks
    fma_scores: bool = True  # forward: the row max on the raw scores, then one FMA per score
    warp_specialize: bool = False  # forward: Triton's automatic warp specialisation of the unmasked full loop
    plans: bool = True  # eager calls replay a plan cached per call signature instead of the autotuner


VARIANT = Variant()


@contextlib.contextmanager
def variant(**changes: bool) -> Iterator[Variant]:
    """Run the block with some of the variant's switches changed (for A/B timing and tests)."""
    global VARIANT
    previous = VARIANT
    VARIANT = dataclasses.replace(previous, **changes)
    try:
        yield VARIANT
    finally:
        VARIANT = previous


# (BLOCK_M, BLOCK_N, num_warps, num_stages) autotuning candidates for Hopper, by head dim (up to 64, or
# 128), chosen by time: the winners of two tuning rounds on an H200 (reports/baselines/nvidia-h200/
# kernel_configs.json), whether they spill registers or not, beside the spill-free shapes that replaced the
# spilling ones for a while where those won somewhere (at head dim 64; at 128 they lost by 16-25 % in the
# full mask, kernels/README.md has both measured; hopper_ab.py still times them). Spills are recorded by
# tests/hopper_compile.py and kept within a budget there, not forbidden. Forward and dQ walk key blocks
# inside a query block (BLOCK_M a multiple of BLOCK_N); dK/dV and the single pass the other way round.
TUNED = {
    "fwd": {64: [(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 8, 4)],
            128: [(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 8, 4)]},
    "dkdv": {64: [(64, 128, 8, 2), (32, 128, 4, 3), (64, 64, 4, 3), (64, 128, 8, 3)],
             128: [(64, 128, 8, 2), (64, 128, 8, 3), (64, 64, 4, 3)]},
    "dq": {64: [(128, 64, 8, 2), (128, 32, 4, 3), (64, 64, 4, 3), (128, 64, 8, 3)],
           128: [(128, 64, 8, 2), (128, 32, 4, 3), (64, 64, 4, 3)]},
    # FlashAttention-3's backward tiles (64 queries streamed past 128 keys, 8 warps) beside the narrower ones
    "single_pass": {64: [(64, 128, 8, 2), (64, 64, 8, 3), (32, 128, 8, 3)],
                    128: [(64, 128, 8, 2), (64, 64, 8, 2), (16, 64, 8, 2)]},
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


# The host path's integer helpers are plain Python: triton.cdiv and triton.next_power_of_2 go through a JIT
# wrapper that costs ~5 us a call, on every call.
def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def seqlen_bucket(seqlen: int) -> int:
    """Autotuning is keyed on sequence lengths rounded up to a power of two: seq 1000 reuses 1024's choice."""
    return max(16, 1 << (seqlen - 1).bit_length())


# Keys of the autotuning cache (the bucketed lengths are arguments the kernels do not read); each kernel's
# key is the names it takes, so that every variant is tuned, and cached on disk, apart.
TUNING_KEY = ["bucket_q", "bucket_k", "HEAD_DIM", "CAUSAL", "ATOMIC_DQ", "DESC", "HEAVY_FIRST", "HALF_DIAGONAL",
              "FMA_SCORES", "WARP_SPECIALIZE"]
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
def _rows(base, n_rows, s_row, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BLOCK: tl.constexpr,
          DESC: tl.constexpr):
    """One (batch, head)'s [n_rows, head_dim] rows to load tiles from: with DESC a tensor descriptor whose
    [BLOCK, HEAD_DIM_PAD] tiles read rows and columns out of bounds as zeros, else the base pointer."""
    if DESC:
        source = tl.make_tensor_descriptor(base, shape=[n_rows, HEAD_DIM], strides=[s_row, 1],
                                           block_shape=[BLOCK, HEAD_DIM_PAD])
    else:
        source = base
    return source


@triton.jit
def _tile(source, start, rows, n_rows, s_row, s_d, offs_d, HEAD_DIM: tl.constexpr, CHECK_ROWS: tl.constexpr,
          EVEN_D: tl.constexpr, DESC: tl.constexpr):
    """The tile of rows [start, start + len(rows)) from `_rows`' source (masked as `_load_tile` says)."""
    if DESC:
        tile = source.load([start, 0])
    else:
        tile = _load_tile(source + rows[:, None] * s_row + offs_d[None, :] * s_d, rows, n_rows, offs_d, HEAD_DIM,
                          CHECK_ROWS, EVEN_D)
    return tile


@triton.jit
def _store_tile(ptrs, tile, rows, n_rows, offs_d, HEAD_DIM: tl.constexpr):
    tl.store(ptrs, tile, mask=(rows < n_rows)[:, None] & (offs_d < HEAD_DIM)[None, :])


@triton.jit
def _block_and_head(HEAVY_FIRST: tl.constexpr, HEAVY_LAST_BLOCKS: tl.constexpr):
    """This program's block along the sequence and its batch x head index. HEAVY_FIRST grids are
    (batch x heads, blocks): the GPU starts every head's block 0 before any head's block 1, and with
    HEAVY_LAST_BLOCKS block 0 is the sequence's last (under a causal mask, the longest query block)."""
    if HEAVY_FIRST:
        block = tl.program_id(1)
        if HEAVY_LAST_BLOCKS:
            block = tl.num_programs(1) - 1 - block
        off_hz = tl.program_id(0)
    else:
        block = tl.program_id(0)
        off_hz = tl.program_id(1)
    return block, off_hz


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
def _attn_fwd_inner(acc, l_i, m_i, q, k_src, v_src, s_kn, s_kd, s_vn, s_vd, offs_m, offs_d, lo, hi,
                    seqlen_k, qk_scale, HEAD_DIM: tl.constexpr, EVEN_D: tl.constexpr, CAUSAL: tl.constexpr,
                    MASK: tl.constexpr, DOT_PRECISION: tl.constexpr, DESC: tl.constexpr,
                    FMA_SCORES: tl.constexpr, WARP_SPECIALIZE: tl.constexpr, BLOCK_N: tl.constexpr):
    """Online softmax over key blocks [lo, hi); MASK compiles in the key-tail and causal masks."""
    for start_n in tl.range(lo, hi, BLOCK_N, warp_specialize=WARP_SPECIALIZE and not MASK):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _tile(k_src, start_n, offs_n, seqlen_k, s_kn, s_kd, offs_d, HEAD_DIM, MASK, EVEN_D, DESC)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
        if MASK:
            keep = offs_n[None, :] < seqlen_k
            if CAUSAL:
                keep = keep & (offs_n[None, :] <= offs_m[:, None])
            qk = tl.where(keep, qk, float("-inf"))
        if FMA_SCORES:  # scaling commutes with the max (qk_scale > 0): one FMA a score inside exp2
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            p = tl.exp2(qk * qk_scale - m_new[:, None])
        else:
            qk = qk * qk_scale
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            p = tl.exp2(qk - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _tile(v_src, start_n, offs_n, seqlen_k, s_vn, s_vd, offs_d, HEAD_DIM, MASK, EVEN_D, DESC)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.autotune(configs=_configs("fwd"), key=TUNING_KEY, prune_configs_by=_pruner("fwd"), **PERSIST)
@triton.jit
def _attn_fwd(Q, K, V, Out, LSE,
              s_qz, s_qh, s_qm, s_qd, s_kz, s_kh, s_kn, s_kd, s_vz, s_vh, s_vn, s_vd,
              n_heads, seqlen_q, seqlen_k, bucket_q, bucket_k, qk_scale,
              HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, EVEN_D: tl.constexpr, CAUSAL: tl.constexpr,
              DOT_PRECISION: tl.constexpr, DESC: tl.constexpr, HEAVY_FIRST: tl.constexpr,
              FMA_SCORES: tl.constexpr, WARP_SPECIALIZE: tl.constexpr, BLOCK_M: tl.constexpr,
              BLOCK_N: tl.constexpr):
    block, off_hz = _block_and_head(HEAVY_FIRST, True)
    start_m = block * BLOCK_M
    off_z = (off_hz // n_heads).to(tl.int64)
    off_h = (off_hz % n_heads).to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    q_src = _rows(Q + off_z * s_qz + off_h * s_qh, seqlen_q, s_qm, HEAD_DIM, HEAD_DIM_PAD, BLOCK_M, DESC)
    q = _tile(q_src, start_m, offs_m, seqlen_q, s_qm, s_qd, offs_d, HEAD_DIM, True, EVEN_D, DESC)
    k_src = _rows(K + off_z * s_kz + off_h * s_kh, seqlen_k, s_kn, HEAD_DIM, HEAD_DIM_PAD, BLOCK_N, DESC)
    v_src = _rows(V + off_z * s_vz + off_h * s_vh, seqlen_k, s_vn, HEAD_DIM, HEAD_DIM_PAD, BLOCK_N, DESC)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM_PAD], dtype=tl.float32)
    unmasked_hi, masked_hi = _key_blocks(start_m, seqlen_k, CAUSAL, BLOCK_M, BLOCK_N)
    acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, k_src, v_src, s_kn, s_kd, s_vn, s_vd, offs_m, offs_d,
                                    0, unmasked_hi, seqlen_k, qk_scale, HEAD_DIM, EVEN_D, CAUSAL, False,
                                    DOT_PRECISION, DESC, FMA_SCORES, WARP_SPECIALIZE, BLOCK_N)
    acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, k_src, v_src, s_kn, s_kd, s_vn, s_vd, offs_m, offs_d,
                                    unmasked_hi, masked_hi, seqlen_k, qk_scale, HEAD_DIM, EVEN_D, CAUSAL, True,
                                    DOT_PRECISION, DESC, FMA_SCORES, WARP_SPECIALIZE, BLOCK_N)
    out = acc / l_i[:, None]
    out_base = Out + off_hz.to(tl.int64) * seqlen_q * HEAD_DIM
    _store_tile(out_base + offs_m[:, None] * HEAD_DIM + offs_d[None, :], out.to(Out.dtype.element_ty),
                offs_m, seqlen_q, offs_d, HEAD_DIM)
    tl.store(LSE + off_hz.to(tl.int64) * seqlen_q + offs_m, m_i + tl.log2(l_i), mask=offs_m < seqlen_q)


@triton.jit
def _attn_bwd_preprocess(Out, DO, Delta, DQ_ACC, seqlen_q, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
                         ZERO_DQ: tl.constexpr, BLOCK_M: tl.constexpr):
    """delta = rowsum(dO * O), per query row (O and dO contiguous); with ZERO_DQ also zero the single pass's
    fp32 dQ sums of the same rows, which saves a launch."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    off_hz = tl.program_id(1).to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    offs = off_hz * seqlen_q * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
    mask = (offs_m < seqlen_q)[:, None] & (offs_d < HEAD_DIM)[None, :]
    o = tl.load(Out + offs, mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(Delta + off_hz * seqlen_q + offs_m, tl.sum(o * do, axis=1), mask=offs_m < seqlen_q)
    if ZERO_DQ:
        tl.store(DQ_ACC + offs, tl.zeros([BLOCK_M, HEAD_DIM_PAD], dtype=tl.float32), mask=mask)


@triton.jit
def _attn_bwd_dq_cast(DQ_ACC, DQ, n, sm_scale, BLOCK: tl.constexpr):
    """The single pass's dQ: its fp32 sums times sm_scale, in the inputs' dtype (one launch, not two)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    dq = tl.load(DQ_ACC + offs, mask=offs < n) * sm_scale
    tl.store(DQ + offs, dq.to(DQ.dtype.element_ty), mask=offs < n)


@triton.jit
def _add_dq(dq_dst, dq, start_m, offs_m, seqlen_q, offs_d, HEAD_DIM: tl.constexpr, DESC: tl.constexpr):
    """Add a query block's share of dQ into the fp32 sums: a tensor descriptor's atomic add (Hopper's TMA
    reduce-add, from shared memory) or one fp32 atomic per element."""
    if DESC:
        dq_dst.atomic_add([start_m, 0], dq)
    else:
        tl.atomic_add(dq_dst + offs_m[:, None] * HEAD_DIM + offs_d[None, :], dq,
                      mask=(offs_m < seqlen_q)[:, None] & (offs_d < HEAD_DIM)[None, :])


@triton.jit
def _attn_bwd_kv_inner(dk, dv, k, v, q_src, s_qm, s_qd, do_src, dq_dst, lse_base, delta_base, offs_n, offs_d,
                       lo, hi, seqlen_q, seqlen_k, qk_scale, HEAD_DIM: tl.constexpr, EVEN_D: tl.constexpr,
                       CAUSAL: tl.constexpr, MASK: tl.constexpr, ATOMIC_DQ: tl.constexpr,
                       DOT_PRECISION: tl.constexpr, DESC: tl.constexpr, BLOCK_M: tl.constexpr):
    """Accumulate dK and dV of one key block over query blocks [lo, hi); with ATOMIC_DQ also add each query
    block's share of dQ. Padded query rows load as zeros and contribute nothing, so MASK only bounds the
    loads and applies the causal mask."""
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q = _tile(q_src, start_m, offs_m, seqlen_q, s_qm, s_qd, offs_d, HEAD_DIM, MASK, EVEN_D, DESC)
        do = _tile(do_src, start_m, offs_m, seqlen_q, HEAD_DIM, 1, offs_d, HEAD_DIM, MASK, EVEN_D, DESC)
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
            _add_dq(dq_dst, dq, start_m, offs_m, seqlen_q, offs_d, HEAD_DIM, DESC)
    return dk, dv


@triton.jit
def _query_sources(q_base, do_base, dq_base, seqlen_q, s_qm, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
                   ATOMIC_DQ: tl.constexpr, DESC: tl.constexpr, BLOCK: tl.constexpr):
    """Where a key block's loop reads Q and dO tiles of BLOCK rows and adds dQ (`_rows` each)."""
    q_src = _rows(q_base, seqlen_q, s_qm, HEAD_DIM, HEAD_DIM_PAD, BLOCK, DESC)
    do_src = _rows(do_base, seqlen_q, HEAD_DIM, HEAD_DIM, HEAD_DIM_PAD, BLOCK, DESC)
    dq_dst = dq_base
    if ATOMIC_DQ:
        dq_dst = _rows(dq_base, seqlen_q, HEAD_DIM, HEAD_DIM, HEAD_DIM_PAD, BLOCK, DESC)
    return q_src, do_src, dq_dst


@triton.jit
def _attn_bwd_kv(Q, K, V, DO, DK, DV, DQ_ACC, LSE, Delta,
                 s_qz, s_qh, s_qm, s_qd, s_kz, s_kh, s_kn, s_kd, s_vz, s_vh, s_vn, s_vd,
                 n_heads, seqlen_q, seqlen_k, bucket_q, bucket_k, qk_scale, sm_scale,
                 HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, EVEN_D: tl.constexpr, CAUSAL: tl.constexpr,
                 ATOMIC_DQ: tl.constexpr, DOT_PRECISION: tl.constexpr, DESC: tl.constexpr,
                 HEAVY_FIRST: tl.constexpr, HALF_DIAGONAL: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr):
    """One program per key block: dK and dV, and with ATOMIC_DQ the fp32 sums of dQ in DQ_ACC (zeroed by
    the preprocessing kernel; the cast multiplies them by sm_scale). K is not pre-scaled by
    sm_scale * log2(e), as Triton's tutorial does: the scale is free inside exp2's FMA, and a pre-rounded K
    makes the recomputed scores drift from the forward's (dQ error 3.6e-5 against PyTorch's 6.6e-7 in fp32
    on the test with very negative scores). Under a causal mask the first key blocks are the heaviest."""
    block, off_hz = _block_and_head(HEAVY_FIRST, False)
    start_n = block * BLOCK_N
    off_z = (off_hz // n_heads).to(tl.int64)
    off_h = (off_hz % n_heads).to(tl.int64)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    k_src = _rows(K + off_z * s_kz + off_h * s_kh, seqlen_k, s_kn, HEAD_DIM, HEAD_DIM_PAD, BLOCK_N, DESC)
    v_src = _rows(V + off_z * s_vz + off_h * s_vh, seqlen_k, s_vn, HEAD_DIM, HEAD_DIM_PAD, BLOCK_N, DESC)
    k = _tile(k_src, start_n, offs_n, seqlen_k, s_kn, s_kd, offs_d, HEAD_DIM, True, EVEN_D, DESC)
    v = _tile(v_src, start_n, offs_n, seqlen_k, s_vn, s_vd, offs_d, HEAD_DIM, True, EVEN_D, DESC)
    row_base = off_hz.to(tl.int64) * seqlen_q
    q_base = Q + off_z * s_qz + off_h * s_qh
    q_src, do_src, dq_dst = _query_sources(q_base, DO + row_base * HEAD_DIM, DQ_ACC + row_base * HEAD_DIM,
                                           seqlen_q, s_qm, HEAD_DIM, HEAD_DIM_PAD, ATOMIC_DQ, DESC, BLOCK_M)

    dk = tl.zeros([BLOCK_N, HEAD_DIM_PAD], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM_PAD], dtype=tl.float32)
    full_q = (seqlen_q // BLOCK_M) * BLOCK_M
    if CAUSAL:  # queries before this key block never see it; those past its diagonal see all of it
        # HALF_DIAGONAL steps the masked diagonal in half query blocks, as Triton's tutorial does (>= 16 rows)
        DIAG_M: tl.constexpr = BLOCK_M // 2 if HALF_DIAGONAL and BLOCK_M >= 32 else BLOCK_M
        q_diag, do_diag, dq_diag = q_src, do_src, dq_dst
        if DIAG_M != BLOCK_M:  # descriptors of the half blocks
            q_diag, do_diag, dq_diag = _query_sources(q_base, DO + row_base * HEAD_DIM, DQ_ACC + row_base * HEAD_DIM,
                                                      seqlen_q, s_qm, HEAD_DIM, HEAD_DIM_PAD, ATOMIC_DQ, DESC, DIAG_M)
        diag_hi = tl.minimum(start_n + BLOCK_N, seqlen_q)
        dk, dv = _attn_bwd_kv_inner(dk, dv, k, v, q_diag, s_qm, s_qd, do_diag, dq_diag, LSE + row_base,
                                    Delta + row_base, offs_n, offs_d, start_n, diag_hi, seqlen_q, seqlen_k,
                                    qk_scale, HEAD_DIM, EVEN_D, CAUSAL, True, ATOMIC_DQ, DOT_PRECISION, DESC,
                                    DIAG_M)
        unmasked_lo = start_n + BLOCK_N
    else:
        unmasked_lo = 0
    dk, dv = _attn_bwd_kv_inner(dk, dv, k, v, q_src, s_qm, s_qd, do_src, dq_dst, LSE + row_base,
                                Delta + row_base, offs_n, offs_d, unmasked_lo, full_q, seqlen_q, seqlen_k,
                                qk_scale, HEAD_DIM, EVEN_D, CAUSAL, False, ATOMIC_DQ, DOT_PRECISION, DESC, BLOCK_M)
    dk, dv = _attn_bwd_kv_inner(dk, dv, k, v, q_src, s_qm, s_qd, do_src, dq_dst, LSE + row_base,
                                Delta + row_base, offs_n, offs_d, tl.maximum(unmasked_lo, full_q), seqlen_q,
                                seqlen_q, seqlen_k, qk_scale, HEAD_DIM, EVEN_D, CAUSAL, True, ATOMIC_DQ,
                                DOT_PRECISION, DESC, BLOCK_M)
    grad_base = off_hz.to(tl.int64) * seqlen_k * HEAD_DIM + offs_n[:, None] * HEAD_DIM + offs_d[None, :]
    _store_tile(DK + grad_base, (dk * sm_scale).to(DK.dtype.element_ty), offs_n, seqlen_k, offs_d, HEAD_DIM)
    _store_tile(DV + grad_base, dv.to(DV.dtype.element_ty), offs_n, seqlen_k, offs_d, HEAD_DIM)


# One kernel, two autotuners: the split backward's dK/dV, and the single pass that also sums dQ (zeroed
# before each autotuning trial). ATOMIC_DQ is in the key so that their disk caches never mix.
_attn_bwd_dkdv = triton.autotune(configs=_configs("dkdv"), key=TUNING_KEY, prune_configs_by=_pruner("dkdv"),
                                 **PERSIST)(_attn_bwd_kv)
_attn_bwd_single = triton.autotune(configs=_configs("single_pass"), key=TUNING_KEY,
                                   prune_configs_by=_pruner("single_pass"), reset_to_zero=["DQ_ACC"],
                                   **PERSIST)(_attn_bwd_kv)


@triton.jit
def _attn_bwd_dq_inner(dq, q, do, lse, delta, k_src, v_src, s_kn, s_kd, s_vn, s_vd, offs_m, offs_d, lo, hi,
                       seqlen_k, qk_scale, HEAD_DIM: tl.constexpr, EVEN_D: tl.constexpr, CAUSAL: tl.constexpr,
                       MASK: tl.constexpr, DOT_PRECISION: tl.constexpr, DESC: tl.constexpr,
                       BLOCK_N: tl.constexpr):
    """Accumulate dQ of one query block over key blocks [lo, hi). Padded keys load as zeros, so their
    probability exp2(-lse) is masked to 0: for a row with very negative scores it is inf, and inf * 0 = NaN."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _tile(k_src, start_n, offs_n, seqlen_k, s_kn, s_kd, offs_d, HEAD_DIM, MASK, EVEN_D, DESC)
        v = _tile(v_src, start_n, offs_n, seqlen_k, s_vn, s_vd, offs_d, HEAD_DIM, MASK, EVEN_D, DESC)
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
                 DOT_PRECISION: tl.constexpr, DESC: tl.constexpr, HEAVY_FIRST: tl.constexpr,
                 HALF_DIAGONAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    block, off_hz = _block_and_head(HEAVY_FIRST, True)
    start_m = block * BLOCK_M
    off_z = (off_hz // n_heads).to(tl.int64)
    off_h = (off_hz % n_heads).to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    row_base = off_hz.to(tl.int64) * seqlen_q
    q_src = _rows(Q + off_z * s_qz + off_h * s_qh, seqlen_q, s_qm, HEAD_DIM, HEAD_DIM_PAD, BLOCK_M, DESC)
    q = _tile(q_src, start_m, offs_m, seqlen_q, s_qm, s_qd, offs_d, HEAD_DIM, True, EVEN_D, DESC)
    do_src = _rows(DO + row_base * HEAD_DIM, seqlen_q, HEAD_DIM, HEAD_DIM, HEAD_DIM_PAD, BLOCK_M, DESC)
    do = _tile(do_src, start_m, offs_m, seqlen_q, HEAD_DIM, 1, offs_d, HEAD_DIM, True, EVEN_D, DESC)
    lse = tl.load(LSE + row_base + offs_m, mask=offs_m < seqlen_q, other=0.0)
    delta = tl.load(Delta + row_base + offs_m, mask=offs_m < seqlen_q, other=0.0)
    k_base = K + off_z * s_kz + off_h * s_kh
    v_base = V + off_z * s_vz + off_h * s_vh
    k_src = _rows(k_base, seqlen_k, s_kn, HEAD_DIM, HEAD_DIM_PAD, BLOCK_N, DESC)
    v_src = _rows(v_base, seqlen_k, s_vn, HEAD_DIM, HEAD_DIM_PAD, BLOCK_N, DESC)

    dq = tl.zeros([BLOCK_M, HEAD_DIM_PAD], dtype=tl.float32)
    unmasked_hi, masked_hi = _key_blocks(start_m, seqlen_k, CAUSAL, BLOCK_M, BLOCK_N)
    dq = _attn_bwd_dq_inner(dq, q, do, lse, delta, k_src, v_src, s_kn, s_kd, s_vn, s_vd, offs_m, offs_d,
                            0, unmasked_hi, seqlen_k, qk_scale, HEAD_DIM, EVEN_D, CAUSAL, False, DOT_PRECISION,
                            DESC, BLOCK_N)
    # HALF_DIAGONAL steps the causal diagonal's keys in half blocks, as Triton's tutorial does (>= 16 keys)
    DIAG_N: tl.constexpr = BLOCK_N // 2 if HALF_DIAGONAL and CAUSAL and BLOCK_N >= 32 else BLOCK_N
    k_diag = k_src
    v_diag = v_src
    if DIAG_N != BLOCK_N:  # descriptors of the half blocks
        k_diag = _rows(k_base, seqlen_k, s_kn, HEAD_DIM, HEAD_DIM_PAD, DIAG_N, DESC)
        v_diag = _rows(v_base, seqlen_k, s_vn, HEAD_DIM, HEAD_DIM_PAD, DIAG_N, DESC)
    dq = _attn_bwd_dq_inner(dq, q, do, lse, delta, k_diag, v_diag, s_kn, s_kd, s_vn, s_vd, offs_m, offs_d,
                            unmasked_hi, masked_hi, seqlen_k, qk_scale, HEAD_DIM, EVEN_D, CAUSAL, True,
                            DOT_PRECISION, DESC, DIAG_N)
    rows = row_base * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
    _store_tile(DQ + rows, (dq * sm_scale).to(DQ.dtype.element_ty), offs_m, seqlen_q, offs_d, HEAD_DIM)


@functools.cache
def shape_constexprs(dtype: torch.dtype, head_dim: int, causal: bool) -> dict:
    """The constexpr arguments every kernel shares: head dim (padded to a power of two), the mask, and the
    dot precision (IEEE for fp32 inputs, so fp32 results match PyTorch's fp32 rather than TF32). Cached:
    callers read it, never change it."""
    padded = seqlen_bucket(head_dim)
    return {"HEAD_DIM": head_dim, "HEAD_DIM_PAD": padded, "EVEN_D": head_dim == padded, "CAUSAL": causal,
            "DOT_PRECISION": "ieee" if dtype == torch.float32 else "tf32"}


AUTOTUNED = {"fwd": _attn_fwd, "dkdv": _attn_bwd_dkdv, "dq": _attn_bwd_dq, "single_pass": _attn_bwd_single}
# The constexprs that tell the two uses of the key-block backward kernel apart.
FIXED_CONSTEXPRS = {"dkdv": {"ATOMIC_DQ": False}, "single_pass": {"ATOMIC_DQ": True}}
BACKWARDS = {"split": ("dkdv", "dq"), "single_pass": ("single_pass",)}  # each backward's kernels
PREPROCESS_ROWS = 64  # query rows per program of the preprocessing kernel
CAST_BLOCK = 1024  # elements per program of the single pass's dQ cast


@functools.cache
def constexprs(kernel: str, dtype: torch.dtype, head_dim: int, causal: bool, variant: Variant,
               descriptors: bool) -> dict:
    """The constexprs the caller sets for one of AUTOTUNED's kernels (the config sets the blocks): those
    of the shape, the kernel's fixed ones and the variant's, each kernel taking the names it declares."""
    every = {**shape_constexprs(dtype, head_dim, causal), **FIXED_CONSTEXPRS.get(kernel, {}),
             "DESC": descriptors, "HEAVY_FIRST": causal and variant.heavy_first,
             "HALF_DIAGONAL": causal and variant.half_diagonal,
             "FMA_SCORES": variant.fma_scores, "WARP_SPECIALIZE": variant.warp_specialize and not causal}
    names = AUTOTUNED[kernel].fn.arg_names
    return {name: value for name, value in every.items() if name in names}


@functools.cache
def _hopper(device: torch.device) -> bool:
    return device.type == "cpu" or torch.cuda.get_device_capability(device) >= (9, 0)


def _scratch(size: int, alignment: int, stream: int | None) -> torch.Tensor:
    """Global memory Triton asks for at launch: where device-side tensor descriptors are built."""
    return torch.empty(size, dtype=torch.int8, device="cuda")


def _descriptors(*tensors: torch.Tensor) -> bool:
    """Whether the variant loads through tensor descriptors and these tensors allow it: Hopper or newer (or
    the interpreter), rows of contiguous elements, 16-byte aligned bases and strides. Eager calls only:
    torch.compile traces fake tensors, whose alignment is unknown, so compiled graphs load through pointers."""
    if not VARIANT.descriptors or not _hopper(tensors[0].device):
        return False
    size = tensors[0].element_size()
    usable = all(t.stride(-1) == 1 and t.data_ptr() % 16 == 0 and all(s * size % 16 == 0 for s in t.stride()[:-1])
                 for t in tensors)
    if usable and tensors[0].is_cuda:
        triton.set_allocator(_scratch)  # per thread (a context variable): autograd runs the backward in its own
    return usable


def _blocks(n: int, block: str, batch_heads: int, heavy_first: bool):
    """A grid over n rows in blocks of meta[block] by batch x heads, heads first under HEAVY_FIRST."""
    def grid(meta: dict) -> tuple[int, int]:
        blocks = _cdiv(n, meta[block])
        return (batch_heads, blocks) if heavy_first else (blocks, batch_heads)

    return grid


def _kernel_launch(name: str, grid_rows: int, block: str, args: tuple, q: torch.Tensor, causal: bool,
                   descriptors: bool) -> Launch:
    """A launch of one of AUTOTUNED's kernels over grid_rows rows, in blocks of the config's `block`."""
    fixed = constexprs(name, q.dtype, q.shape[-1], causal, VARIANT, descriptors)
    grid = _blocks(grid_rows, block, q.shape[0] * q.shape[1], fixed.get("HEAVY_FIRST", False))
    return Launch(AUTOTUNED[name], grid, args, fixed)


def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, sm_scale: float,
             run) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and base-2 log-sum-exp of the forward, its launch handed to `run`."""
    batch, heads, seqlen_q, _ = q.shape
    seqlen_k = k.shape[2]
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((batch * heads, seqlen_q), dtype=torch.float32, device=q.device)
    args = (q, k, v, out, lse, *q.stride(), *k.stride(), *v.stride(), heads, seqlen_q, seqlen_k,
            seqlen_bucket(seqlen_q), seqlen_bucket(seqlen_k), sm_scale * LOG2E)
    run([_kernel_launch("fwd", seqlen_q, "BLOCK_M", args, q, causal, run is not traced and _descriptors(q, k, v))])
    return out, lse


def _backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
              lse: torch.Tensor, causal: bool, sm_scale: float, backward: str,
              run) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv from a contiguous output gradient, the backward's launches handed to `run`."""
    batch, heads, seqlen_q, head_dim = q.shape
    seqlen_k = k.shape[2]
    shape = shape_constexprs(q.dtype, head_dim, causal)
    single = backward == "single_pass"
    delta = torch.empty_like(lse)
    dq_sums = torch.empty(q.shape, dtype=torch.float32, device=q.device) if single else delta
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    preprocess_grid = (_cdiv(seqlen_q, PREPROCESS_ROWS), batch * heads)
    launches = [Launch(_attn_bwd_preprocess, lambda meta: preprocess_grid,
                       (out, grad_out, delta, dq_sums, seqlen_q),
                       {"HEAD_DIM": head_dim, "HEAD_DIM_PAD": shape["HEAD_DIM_PAD"], "ZERO_DQ": single,
                        "BLOCK_M": PREPROCESS_ROWS})]
    strides = (*q.stride(), *k.stride(), *v.stride(), heads, seqlen_q, seqlen_k, seqlen_bucket(seqlen_q),
               seqlen_bucket(seqlen_k), sm_scale * LOG2E, sm_scale)
    descriptors = run is not traced and _descriptors(q, k, v, grad_out)
    if single:
        elements = dq.numel()
        launches += [
            _kernel_launch("single_pass", seqlen_k, "BLOCK_N", (q, k, v, grad_out, dk, dv, dq_sums, lse, delta,
                                                                *strides), q, causal, descriptors),
            Launch(_attn_bwd_dq_cast, lambda meta: (_cdiv(elements, CAST_BLOCK),),
                   (dq_sums, dq, elements, sm_scale), {"BLOCK": CAST_BLOCK})]
    else:  # lse stands in for dK/dV's unused DQ_ACC
        launches += [
            _kernel_launch("dkdv", seqlen_k, "BLOCK_N", (q, k, v, grad_out, dk, dv, lse, lse, delta, *strides), q,
                           causal, descriptors),
            _kernel_launch("dq", seqlen_q, "BLOCK_M", (q, k, v, grad_out, dq, lse, delta, *strides), q, causal,
                           descriptors)]
    run(launches)
    return dq, dk, dv


PLANS = Plans()


def _eager(kind: str, key: tuple):
    """How an eager call launches: replaying its signature's plan, or (variant `plans` off) Triton's path."""
    return functools.partial(PLANS.run, kind, (key, VARIANT)) if VARIANT.plans else dispatch


def forget_configs() -> None:
    """Forget the planned launches and what `last_configs` reports, before a new case (or new configs)."""
    PLANS.clear()
    for kernel in AUTOTUNED.values():
        kernel.best_config = None


def last_configs() -> dict[str, str]:
    """The config each autotuned kernel last ran with (tuned, or read from the cache), by kernel: a plan's
    replays run the config its first call chose, and `forget_configs` comes before every case."""
    return {name: str(kernel.best_config) for name, kernel in AUTOTUNED.items()
            if getattr(kernel, "best_config", None) is not None}


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal: bool, sm_scale: float, backward: str, key: tuple):
        """`key`: what the forward's plan depends on (`_signature` and the mask)."""
        out, lse = _forward(q, k, v, causal, sm_scale, _eager("fwd", key))
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal, ctx.sm_scale, ctx.backward = causal, sm_scale, backward
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        # from the saved tensors as they come back (a saved-tensor hook may hand back other strides)
        key = (_signature(q, k, v), grad_out.stride(), grad_out.data_ptr() % 16, ctx.causal, ctx.backward)
        dq, dk, dv = _backward(grad_out, q, k, v, out, lse, ctx.causal, ctx.sm_scale, ctx.backward,
                               _eager("bwd", key))
        return dq, dk, dv, None, None, None, None


@torch.library.triton_op("archbench::flash_attention", mutates_args=())
def _attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, sm_scale: float,
                  backward: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward as torch.compile sees it, its kernel traced through wrap_triton: output and log-sum-exp
    (`backward` is there for the backward's context)."""
    return _forward(q, k, v, causal, sm_scale, traced)


@torch.library.triton_op("archbench::flash_attention_backward", mutates_args=())
def _attention_backward_op(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           out: torch.Tensor, lse: torch.Tensor, causal: bool, sm_scale: float,
                           backward: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward(grad_out.contiguous(), q, k, v, out, lse, causal, sm_scale, backward, traced)


def _setup_context(ctx, inputs: tuple, output: tuple) -> None:
    q, k, v, causal, sm_scale, backward = inputs
    ctx.save_for_backward(q, k, v, *output)
    ctx.causal, ctx.sm_scale, ctx.backward = causal, sm_scale, backward


def _op_backward(ctx, grad_out: torch.Tensor, _grad_lse: torch.Tensor | None):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = torch.ops.archbench.flash_attention_backward(grad_out, q, k, v, out, lse, ctx.causal,
                                                              ctx.sm_scale, ctx.backward)
    return dq, dk, dv, None, None, None


_attention_op.register_autograd(_op_backward, setup_context=_setup_context)


# Shapes for Dynamo's fake tensors. torch.compile's own tracing sees the kernels through wrap_triton; under
# Triton's interpreter wrap_triton hands back the bare kernel, which fake tensors cannot run.
@_attention_op.register_fake
def _(q, k, v, causal, sm_scale, backward):
    return (torch.empty(q.shape, dtype=q.dtype, device=q.device),
            torch.empty((q.shape[0] * q.shape[1], q.shape[2]), dtype=torch.float32, device=q.device))


@_attention_backward_op.register_fake
def _(grad_out, q, k, v, out, lse, causal, sm_scale, backward):
    return tuple(torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
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


_SEEN: set[tuple] = set()  # call signatures whose inputs passed _check_inputs


def _signature(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple:
    """What a plan depends on: shapes, strides, dtypes, devices, and 16-byte alignment (Triton compiles
    kernels specialised to it); and whether the interpreter runs, which decides if CPU tensors are valid."""
    return (q.shape, q.stride(), k.shape, k.stride(), v.shape, v.stride(), q.dtype, k.dtype, v.dtype, q.device,
            k.device, v.device, q.data_ptr() % 16, k.data_ptr() % 16, v.data_ptr() % 16, _interpreting())


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                    sm_scale: float | None = None, backward: str = "split") -> torch.Tensor:
    """softmax(q @ k^T * sm_scale [+ causal mask]) @ v, fused; differentiable in q, k and v.

    `(batch, heads, seq, head_dim)` tensors of one dtype (fp16, bf16 or fp32; fp32 accumulation), any
    sequence lengths (seqlen_q may differ from seqlen_k), head_dim a multiple of 8 up to 128, any strides.
    `sm_scale` defaults to 1/sqrt(head_dim). `backward` is "split" (dK/dV and dQ in two kernels) or
    "single_pass" (FlashAttention-2's, dQ summed with atomics). Raises ValueError for anything else.
    Under torch.compile it is the `archbench::flash_attention` operator, which graphs can hold.
    """
    if backward not in BACKWARDS:
        raise ValueError(f"backward {backward!r} is not one of {', '.join(BACKWARDS)}")
    if sm_scale is not None and not (isinstance(sm_scale, (int, float)) and sm_scale > 0):
        raise ValueError(f"sm_scale must be a positive number, got {sm_scale!r}")
    compiling = torch.compiler.is_compiling()  # checked once per trace: no cache for Dynamo to guard on
    key = None if compiling or not all(isinstance(t, torch.Tensor) for t in (q, k, v)) else _signature(q, k, v)
    if key is None or key not in _SEEN:
        _check_inputs(q, k, v)
        if key is not None:
            _SEEN.add(key)
    scale = float(sm_scale) if sm_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if compiling:
        return torch.ops.archbench.flash_attention(q, k, v, bool(causal), scale, backward)[0]
    return _FlashAttention.apply(q, k, v, bool(causal), scale, backward, (key, bool(causal)))
