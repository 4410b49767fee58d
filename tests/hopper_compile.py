"""Compile every autotuning config of the attention kernels for an H100 (sm_90) without a GPU.

Run as a script (never with TRITON_INTERPRET set): prints the number of jobs, then one JSON line per
compilation with the shared memory it needs and whether Triton emitted Hopper's wgmma instructions.
"""

import importlib
import json
import os
import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

assert os.environ.get("TRITON_INTERPRET") != "1", "the interpreter does not compile"
attention = importlib.import_module("kernels.flash_attention")
SCALARS = {"n_heads": "i32", "seqlen_q": "i32", "seqlen_k": "i32", "qk_scale": "fp32", "sm_scale": "fp32"}
TRITON_DTYPE = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}
TORCH_DTYPE = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
KERNELS = {  # name -> (autotuned kernel, pointer arguments holding the input dtype, fp32 pointer arguments)
    "fwd": (attention._attn_fwd, 4, 1),
    "dkdv": (attention._attn_bwd_dkdv, 6, 2),
    "dq": (attention._attn_bwd_dq, 5, 2),
}


def compile_one(name: str, config: triton.Config, dtype: str, head_dim: int, causal: bool) -> dict:
    autotuner, n_input, n_fp32 = KERNELS[name]
    fn = autotuner.fn
    pointers = iter([f"*{TRITON_DTYPE[dtype]}"] * n_input + ["*fp32"] * n_fp32)
    constexprs = {**attention.shape_constexprs(TORCH_DTYPE[dtype], head_dim, causal), **config.kwargs}
    signature = {}
    for arg in fn.arg_names:
        if arg in constexprs:
            signature[arg] = "constexpr"
        elif arg in SCALARS or arg.startswith("s_"):
            signature[arg] = SCALARS.get(arg, "i32")
        else:
            signature[arg] = next(pointers)
    source = ASTSource(fn=fn, signature=signature,
                       constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": config.num_warps, "num_stages": config.num_stages})
    return {"kernel": name, "config": str(config), "dtype": dtype, "head_dim": head_dim, "causal": causal,
            "shared": compiled.metadata.shared, "wgmma": "wgmma" in compiled.asm["ptx"]}


def main() -> None:
    jobs = [(name, config, "bfloat16", 128, True)  # every config at the largest tiles it must hold
            for name, (autotuner, _, _) in KERNELS.items() for config in autotuner.configs]
    jobs += [(name, autotuner.configs[0], dtype, head_dim, causal)  # a padded head dim, the other dtypes
             for name, (autotuner, _, _) in KERNELS.items()
             for dtype, head_dim, causal in (("float16", 40, True), ("float32", 64, False))]
    print(json.dumps({"jobs": len(jobs)}), flush=True)
    for job in jobs:
        print(json.dumps(compile_one(*job)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
