"""The attention micro-benchmark: every implementation over sequence lengths, head dims, causal and
not, fp16/bf16, forward and forward+backward. FLOPs follow FlashAttention's benchmarks."""

from bench.run.session import outcome


def test_attention(attention_case, benchmark, archbench_session):
    case = attention_case
    mask = "causal" if case.causal else "full"
    benchmark.group = f"attention {case.phase} {case.precision} {mask} d{case.head_dim} s{case.seqlen}"
    outcome(archbench_session.run(case, benchmark))
