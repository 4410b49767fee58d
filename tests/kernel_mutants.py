"""Mutation testing of the Triton kernel's masking and scaling code, run by hand (not in CI):

    python tests/kernel_mutants.py [--jobs 2]

mutmut cannot mutate kernels/: it rewrites every function into a trampoline, while @triton.jit compiles a
function from its own source. So each mutant below is one planted change to a masking or scaling line;
each runs tests/test_flash_attention.py (Triton's interpreter) on a copy of the repository, and a mutant
survives when every test passes. Prints one line per mutant and the kill rate; exits 1 if any survives.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL = "kernels/flash_attention.py"

# (name, exact text in the kernel, its replacement). Each text must occur in the kernel; every occurrence
# is replaced, so a helper's mutant reaches all of its callers.
MUTANTS = [
    ("load: row mask <= instead of <", "mask=(rows < n_rows)[:, None], other", "mask=(rows <= n_rows)[:, None], other"),
    ("load: padded head-dim columns unmasked", "(rows < n_rows)[:, None] & (offs_d < HEAD_DIM)[None, :], other=0.0",
     "(rows < n_rows)[:, None], other=0.0"),
    ("load: rows never checked", "    if CHECK_ROWS:\n", "    if False:\n"),
    ("store: rows past the end written", "tl.store(ptrs, tile, mask=(rows < n_rows)[:, None] & ",
     "tl.store(ptrs, tile, mask=(rows < n_rows + 16)[:, None] & "),
    ("key range: causal end from BLOCK_N", "masked_hi = tl.minimum(start_m + BLOCK_M, seqlen_k)",
     "masked_hi = tl.minimum(start_m + BLOCK_N, seqlen_k)"),
    ("key range: causal unmasked part to the diagonal's end", "unmasked_hi = tl.minimum(start_m, full_k)",
     "unmasked_hi = tl.minimum(start_m + BLOCK_M, full_k)"),
    ("key range: full keys rounded up", "full_k = (seqlen_k // BLOCK_N) * BLOCK_N",
     "full_k = tl.cdiv(seqlen_k, BLOCK_N) * BLOCK_N"),
    ("key range: no masked tail", "        masked_hi = seqlen_k\n", "        masked_hi = full_k\n"),
    ("forward and dq: key tail mask <=", "keep = offs_n[None, :] < seqlen_k", "keep = offs_n[None, :] <= seqlen_k"),
    ("forward and dq: causal mask strict", "keep = keep & (offs_n[None, :] <= offs_m[:, None])",
     "keep = keep & (offs_n[None, :] < offs_m[:, None])"),
    ("forward and dq: causal mask dropped", "keep = keep & (offs_n[None, :] <= offs_m[:, None])", "keep = keep"),
    ("forward: masked scores 0, not -inf", 'qk = tl.where(keep, qk, float("-inf"))', "qk = tl.where(keep, qk, 0.0)"),
    ("forward: scores unscaled", "p = tl.exp2(qk * qk_scale - m_new[:, None])", "p = tl.exp2(qk - m_new[:, None])"),
    ("forward: max of unscaled scores", "m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)",
     "m_new = tl.maximum(m_i, tl.max(qk, 1))"),
    ("preprocess: single pass's dQ sums not zeroed", "    if ZERO_DQ:\n", "    if False:\n"),
    ("descriptors: padded head-dim columns read", "shape=[n_rows, HEAD_DIM], strides",
     "shape=[n_rows, HEAD_DIM_PAD], strides"),
    ("heavy-first grid: head read from the block axis", "        off_hz = tl.program_id(0)\n",
     "        off_hz = tl.program_id(1)\n"),
    ("forward: log-sum-exp without the max", "m_i + tl.log2(l_i)", "tl.log2(l_i)"),
    ("forward: output not normalised", "out = acc / l_i[:, None]", "out = acc"),
    ("forward: running sum not rescaled", "l_i = l_i * alpha + tl.sum(p, 1)", "l_i = l_i + tl.sum(p, 1)"),
    ("dk/dv: causal mask strict", "tl.where(offs_m[None, :] >= offs_n[:, None], p_t, 0.0)",
     "tl.where(offs_m[None, :] > offs_n[:, None], p_t, 0.0)"),
    ("dk/dv: causal mask dropped", "p_t = tl.where(offs_m[None, :] >= offs_n[:, None], p_t, 0.0)", "p_t = p_t"),
    ("dk/dv: diagonal blocks end at BLOCK_M", "diag_hi = tl.minimum(start_n + BLOCK_N, seqlen_q)",
     "diag_hi = tl.minimum(start_n + BLOCK_M, seqlen_q)"),
    ("dk/dv: unmasked queries start at the key block", "unmasked_lo = start_n + BLOCK_N", "unmasked_lo = start_n"),
    ("dk/dv: query tail not masked", "tl.maximum(unmasked_lo, full_q), seqlen_q,\n",
     "tl.maximum(unmasked_lo, full_q), full_q,\n"),
    ("dk/dv: dK not scaled", "(dk * sm_scale).to(DK.dtype.element_ty)", "dk.to(DK.dtype.element_ty)"),
    ("dk/dv: probabilities unscaled", "tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * qk_scale",
     "tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION)"),
    ("dk/dv: delta ignored", "ds_t = p_t * (dp_t - delta[None, :])", "ds_t = p_t * dp_t"),
    ("dq: masks dropped", "p = tl.where(keep, p, 0.0)", "p = p"),
    ("dq: padded keys kept (NaN on very negative rows)", "p = tl.where(keep, p, 0.0)",
     "p = tl.where(keep | (offs_n[None, :] >= seqlen_k), p, 0.0)"),
    ("single pass: padded keys kept", "p_t = tl.where(offs_n[:, None] < seqlen_k, p_t, 0.0)", "p_t = p_t"),
    ("single pass: scores as k @ q^T, rounded unlike the forward's",
     "p_t = tl.trans(tl.exp2(tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale - lse[:, None]))",
     "p_t = tl.exp2(tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * qk_scale - lse[None, :])"),
    ("single pass: dQ not scaled", "dq = tl.load(DQ_ACC + offs, mask=offs < n) * sm_scale",
     "dq = tl.load(DQ_ACC + offs, mask=offs < n)"),
    ("single pass: dQ from the causal-masked keys only", "        if ATOMIC_DQ:\n            dq = tl.dot(",
     "        if ATOMIC_DQ and MASK:\n            dq = tl.dot("),
    ("dq: dQ not scaled", "(dq * sm_scale).to(DQ.dtype.element_ty)", "dq.to(DQ.dtype.element_ty)"),
    ("dq and single pass: probabilities unscaled",
     "tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale - lse",
     "tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) - lse"),
    ("preprocess: delta row mask <=", "tl.sum(o * do, axis=1), mask=offs_m < seqlen_q",
     "tl.sum(o * do, axis=1), mask=offs_m <= seqlen_q"),
    ("wrapper: scale without log2(e)", "seqlen_bucket(seqlen_k), sm_scale * LOG2E)",
     "seqlen_bucket(seqlen_k), sm_scale)"),
    ("wrapper: backward ignores sm_scale", "sm_scale * LOG2E, sm_scale)",
     "LOG2E / math.sqrt(head_dim), 1 / math.sqrt(head_dim))"),
    ("wrapper: default scale 1/d", "1.0 / math.sqrt(q.shape[-1])", "1.0 / q.shape[-1]"),
]


def run_mutant(name: str, old: str, new: str) -> tuple[str, bool, str]:
    """Apply one mutant to a copy of the repository and run the kernel tests; True when they fail."""
    with tempfile.TemporaryDirectory(prefix="kernel-mutant-") as tmp:
        for entry in ("bench", "kernels", "tests", "conftest.py", "pyproject.toml"):
            source = ROOT / entry
            (shutil.copytree if source.is_dir() else shutil.copy)(source, Path(tmp) / entry)
        path = Path(tmp) / KERNEL
        path.write_text(path.read_text().replace(old, new))
        env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": tmp}
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                               "tests/test_flash_attention.py"], cwd=tmp, env=env, capture_output=True, text=True)
        last = (done.stdout.strip().splitlines() or ["?"])[-1]
        return name, done.returncode != 0, last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    source = (ROOT / KERNEL).read_text()
    missing = [name for name, old, _ in MUTANTS if old not in source]
    if missing:
        print(f"error: mutants whose text is not in {KERNEL}: {', '.join(missing)}", file=sys.stderr)
        return 2
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda m: run_mutant(*m), MUTANTS))
    for name, killed, last in results:
        print(f"{'killed  ' if killed else 'SURVIVED'} {name}  ({last})")
    killed = sum(k for _, k, _ in results)
    print(f"{killed} of {len(results)} mutants killed ({killed / len(results):.0%})")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
