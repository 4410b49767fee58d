"""Where profiled time goes: operator and kernel names sorted into a few categories (matmul/conv, attention,
...), for the profiler pass's breakdown and for the trace pages, which read the traces without torch."""

from __future__ import annotations

import re

# Operator and kernel names -> share categories, first match wins. Naive attention's two matmuls are
# plain matmuls to the profiler; its softmax, SDPA's ops and kernels and our Triton kernels are attention.
CATEGORIES = [
    ("communication", r"c10d::|nccl|gloo|allreduce|all_reduce|allgather|all_gather|reduce_scatter|"
                      r"record_param_comms"),  # data-parallel collectives (python -m bench scale)
    ("attention", r"attention|attn|flash|fmha|softmax|sdpa"),
    ("matmul/conv", r"\bmm\b|bmm|addmm|matmul|linear|conv|gemm|cutlass|xmma|wgmma|sm\d\d_|mkldnn|onednn|"
                    r"_lstm|_gru|rnn"),
    ("normalisation", r"norm"),
    ("memory copy", r"copy|memcpy|memset|contiguous|clone|\bcat\b|to_copy|\bto\b|index|gather|scatter|embedding"),
    ("elementwise", r"add|mul|div|sub|relu|gelu|silu|tanh|sigmoid|exp|where|fill|dropout|elementwise|vectorized|"
                    r"pointwise|reduce|sum|mean|max|neg|pow|sqrt|clamp|masked|nll|loss|adam|foreach|mask|bernoulli"),
]


def categorise(name: str) -> str:
    lowered = name.lower()
    for category, pattern in CATEGORIES:
        if re.search(pattern, lowered):
            return category
    return "other"
