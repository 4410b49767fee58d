"""Compile the attention kernels' autotuning configs for an H100 (sm_90) without a GPU.

Run as a script (never with TRITON_INTERPRET set), into a fresh Triton cache so every job compiles:
prints the number of jobs, then one JSON line per compilation with its seconds, the shared memory it
needs, ptxas's registers and spill bytes, and whether Triton emitted Hopper's wgmma instructions.

`hopper_compile.py` compiles every tuned config at its head dim, the fallback, and the configs that
survive pruning for a padded head dim; `hopper_compile.py --preset gpu` compiles what the GPU
preset's Triton cases would: the pruned configs of each kernel for each (dtype, head dim, mask) it runs.
"""

import argparse
import contextlib
import dataclasses
import io
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time

os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="hopper-compile-")  # before triton reads it
import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

assert os.environ.get("TRITON_INTERPRET") != "1", "the interpreter does not compile"
import kernels.flash_attention as attention  # noqa: E402

HOPPER_SHARED_MEMORY = 227 * 1024  # the most one H100 thread block may use (cudaDevAttrMaxSharedMemoryPerBlockOptin)
SCALARS = {"qk_scale": "fp32", "sm_scale": "fp32"}  # every other scalar argument is an int32
FP32_POINTERS = {"LSE", "Delta", "DQ_ACC"}
TRITON_DTYPE = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}
TORCH_DTYPE = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# Which kernels a backward runs, besides the forward.
SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
REGISTERS = re.compile(r"Used (\d+) registers")


def compile_one(name: str, config: triton.Config, dtype: str, head_dim: int, causal: bool,
                changes: tuple[str, ...] = ()) -> dict:
    """Compile one config of one kernel, with the default variant or the switches named in `changes` flipped
    (`descriptors` turns tensor-descriptor loads on)."""
    fn = attention.AUTOTUNED[name].fn
    defaults = attention.Variant()
    variant = dataclasses.replace(defaults, **{c: not getattr(defaults, c) for c in changes})
    constexprs = {**attention.constexprs(name, TORCH_DTYPE[dtype], head_dim, causal, variant, variant.descriptors),
                  **config.kwargs}
    signature = {}
    for arg in fn.arg_names:
        if arg in constexprs:
            signature[arg] = "constexpr"
        elif arg[0].isupper():
            signature[arg] = "*fp32" if arg in FP32_POINTERS else f"*{TRITON_DTYPE[dtype]}"
        else:
            signature[arg] = SCALARS.get(arg, "i32")
    source = ASTSource(fn=fn, signature=signature,
                       constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    log = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(log):  # ptxas -v's report, which Triton prints when asked
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                                  options={"num_warps": config.num_warps, "num_stages": config.num_stages})
    seconds = time.perf_counter() - start
    spills = [sum(map(int, m)) for m in SPILLS.findall(log.getvalue())]
    registers = [int(r) for r in REGISTERS.findall(log.getvalue())]
    return {"kernel": name, "config": str(config), "dtype": dtype, "head_dim": head_dim, "causal": causal,
            "variant": ",".join(changes) or "default",
            "seconds": round(seconds, 2), "shared": compiled.metadata.shared,
            "wgmma": "wgmma" in compiled.asm["ptx"], "tma": "cp.async.bulk.tensor" in compiled.asm["ptx"],
            "tma_reduce": "cp.reduce.async.bulk.tensor" in compiled.asm["ptx"],
            "registers": max(registers, default=None),
            "spill_bytes": sum(spills) if spills else None}


def pruned(name: str, dtype: str, head_dim: int) -> list[triton.Config]:
    """The configs the autotuner compiles for this kernel, dtype and head dim on an H100."""
    padded = attention.shape_constexprs(TORCH_DTYPE[dtype], head_dim, False)["HEAD_DIM_PAD"]
    return attention.fitting_configs(name, attention.AUTOTUNED[name].configs, padded,
                                     TORCH_DTYPE[dtype].itemsize, HOPPER_SHARED_MEMORY)


def every_config_jobs() -> list[tuple]:
    """Every tuned config at its head dim in bf16 with and without the causal mask, the fallback in bf16
    and fp32 at head dim 128, and the configs pruning keeps for a padded head dim (40) in fp16."""
    jobs = [(name, attention._config(*c), "bfloat16", head_dim, causal)
            for name, by_head_dim in attention.TUNED.items() for head_dim, configs in by_head_dim.items()
            for c in configs for causal in (False, True)]
    jobs += [(name, attention._config(*attention.FALLBACK[name]), dtype, 128, True)
             for name in attention.AUTOTUNED for dtype in ("bfloat16", "float32")]
    jobs += [(name, config, "float16", 40, False) for name in attention.AUTOTUNED
             for config in pruned(name, "float16", 40)]
    return jobs + variant_jobs()


# Switches of attention.Variant flipped, with where they change the code: (switches, kernels, masks).
VARIANT_JOBS = [(("descriptors",), tuple(attention.AUTOTUNED), (False, True)),
                (("warp_specialize",), ("fwd",), (False,)),
                (("heavy_first",), ("fwd", "dkdv", "dq"), (True,)),
                (("half_diagonal",), ("dkdv", "dq", "single_pass"), (True,)),
                (("descriptors", "half_diagonal"), ("dkdv", "dq", "single_pass"), (True,)),
                (("fma_scores",), ("fwd",), (False,))]


def variant_jobs() -> list[tuple]:
    """Each variant switch flipped, at head dim 128 in bf16, on every kernel it changes, with each kernel's
    first tuned config (the switches do not depend on the config)."""
    return [(name, attention._config(*attention.TUNED[name][128][0]), "bfloat16", 128, causal, changes)
            for changes, names, masks in VARIANT_JOBS for name in names for causal in masks]


def preset_jobs(preset: str) -> list[tuple]:
    """What the preset's Triton cases compile: each kernel's pruned configs for each key it runs."""
    from bench.sweep.options import preset_triton_keys

    jobs = set()
    for backward, dtype, head_dim, causal in preset_triton_keys(preset):
        names = ("fwd", *attention.BACKWARDS[backward])
        dtype_name = str(dtype).removeprefix("torch.")
        jobs |= {(name, config, dtype_name, head_dim, causal) for name in names
                 for config in pruned(name, dtype_name, head_dim)}
    return sorted(jobs, key=lambda job: (job[0], str(job[1]), *job[2:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", help="compile what this sweep preset's Triton cases compile")
    args = parser.parse_args()
    triton.knobs.nvidia.dump_ptxas_log = True
    jobs = preset_jobs(args.preset) if args.preset else every_config_jobs()
    print(json.dumps({"jobs": len(jobs)}), flush=True)
    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:  # one compilation per core
        for row in pool.imap(_compile_job, jobs):
            print(json.dumps(row), flush=True)


def _compile_job(job: tuple) -> dict:
    return compile_one(*job)


if __name__ == "__main__":
    sys.exit(main())
