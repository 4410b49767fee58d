"""The attention micro-benchmark: every implementation over sequence lengths, head dims, causal and
not, fp16/bf16, forward and forward+backward. FLOPs follow FlashAttention's benchmarks."""


def test_attention(attention_case, benchmark, archbench_run):
    case = attention_case
    mask = "causal" if case.causal else "full"
    benchmark.group = f"attention {case.phase} {case.precision} {mask} d{case.head_dim} s{case.seqlen}"
    archbench_run.run(case, benchmark)
