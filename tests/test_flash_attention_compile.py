"""The attention kernels' autotuning configs compile for the H100 (sm_90), with no GPU needed: a config
that fails to compile, needs more shared memory than Hopper has, or spills registers past a budget would
otherwise only show on a GPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOPPER_SHARED_MEMORY = 227 * 1024  # the most one H100 thread block may use
SPILL_BUDGET = 8 * 1024  # bytes of spill stores and loads one compilation may have


@pytest.fixture(scope="module")
def compiled() -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "hopper_compile.py")], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    header, *rows = (json.loads(line) for line in done.stdout.splitlines())
    assert len(rows) == header["jobs"]
    return rows


@pytest.mark.e2e
def test_every_config_compiles_for_sm90_within_shared_memory(compiled):
    assert {row["kernel"] for row in compiled} == {"fwd", "dkdv", "dq", "single_pass"}
    too_big = [row for row in compiled if row["shared"] > HOPPER_SHARED_MEMORY]
    assert too_big == []


@pytest.mark.e2e
def test_16_bit_spills_stay_within_the_budget(compiled):
    """Configs are chosen by time, so spilling ones compete (the measured winners spilled up to 7.5 KB at
    head dim 128); a spill past the budget is a new register-pressure problem. fp32 inputs are left out:
    their one small config (Triton's IEEE dot runs on CUDA cores) is there for its numerics."""
    assert all(row["spill_bytes"] is not None for row in compiled)  # ptxas reported on every compilation
    assert [row for row in compiled if row["dtype"] != "float32" and row["spill_bytes"] > SPILL_BUDGET] == []


@pytest.mark.e2e
def test_descriptor_variants_load_through_tma(compiled):
    """With descriptors on, tiles load by TMA, and the single pass adds dQ by TMA's reduce-add."""
    described = [row for row in compiled if "descriptors" in row["variant"].split(",")]
    assert {row["kernel"] for row in described} == {"fwd", "dkdv", "dq", "single_pass"}
    assert [row for row in described if not row["tma"]] == []
    assert {row["kernel"] for row in described if row["tma_reduce"]} == {"single_pass"}
    assert [row for row in compiled if row not in described and row["tma"]] == []


@pytest.mark.e2e
def test_pipelined_16_bit_configs_use_hopper_wgmma(compiled):
    pipelined = [row for row in compiled if row["dtype"] != "float32" and "num_stages: 1," not in row["config"]]
    assert pipelined and [row for row in pipelined if not row["wgmma"]] == []
