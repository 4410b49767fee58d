"""The A/B timing script (kernels/hopper_ab.py) rehearsed on the CPU: Triton's interpreter, tiny shapes."""

import csv
import json

import pytest

import kernels.flash_attention as fa
from kernels import hopper_ab


@pytest.fixture
def one_small_shape(monkeypatch):
    monkeypatch.setattr(hopper_ab, "SMOKE_SHAPES", [hopper_ab.Shape(64, 20, True, 1, 1)])
    sides = {side.name: side for side in hopper_ab.SIDES}
    chosen = [sides[name] for name in ("default", "descriptors", "single_pass+descriptors", "no_heavy_first",
                                       "warp_specialize")]
    monkeypatch.setattr(hopper_ab, "SIDES", [*chosen, hopper_ab.Side("broken", backward="fused")])


def test_a_smoke_run_times_every_side_beside_cudnn_and_the_host_loop(one_small_shape, tmp_path, monkeypatch):
    pins = {}
    configs_for = hopper_ab.configs_for

    def recording(side, head_dim, chosen):
        pins[side.name] = dict(chosen)
        return configs_for(side, head_dim, chosen)

    monkeypatch.setattr(hopper_ab, "configs_for", recording)
    assert hopper_ab.main(["--out", str(tmp_path), "--smoke", "--repeats", "1", "--calls", "2"]) == 0
    # the pinned sides get the configs the default side's kernels ran with
    ran = {name: str(fa.AUTOTUNED[name].configs[0]) for name in ("fwd", "dkdv", "dq")}
    assert {name: str(config) for name, config in pins["no_heavy_first"].items()} == ran
    assert set(pins["descriptors"]) == {"fwd", "dkdv", "dq"}
    rows = list(csv.DictReader((tmp_path / "ab.csv").open()))
    timed = {(row["side"], row["phase"]) for row in rows if row["section"] == "kernel" and row["ms"]}
    # warp specialisation changes only the full mask's loop: not timed at a causal shape
    assert timed == {(side, phase) for side in ("cudnn", "default", "descriptors", "single_pass+descriptors",
                                                "no_heavy_first") for phase in ("fwd", "bwd")}
    failed = [row for row in rows if row["side"] == "broken"]  # recorded, and the run went on
    assert [row["note"] for row in failed] == ["error: ValueError: backward 'fused' is not one of split, single_pass"]
    host = [(row["side"], row["phase"]) for row in rows if row["section"] == "host"]
    assert host == [(side, phase) for phase in ("fwd", "fwdbwd") for side in ("sdpa", "triton", "triton_unplanned")]
    assert all(float(row["host_us"]) > 0 for row in rows if row["section"] == "host")
    summary = (tmp_path / "ab.md").read_text()
    assert "| d64 causal 20 | descriptors | bwd |" in summary and "broken, repeat 0: error: ValueError" in summary
    assert json.loads((tmp_path / "environment.json").read_text())["triton"]


def test_every_side_leaves_the_kernels_configs_as_they_were():
    before = ({name: kernel.configs for name, kernel in fa.AUTOTUNED.items()}, fa.TUNED)
    chosen = {name: kernel.configs[0] for name, kernel in fa.AUTOTUNED.items()}
    for side in hopper_ab.SIDES:
        with hopper_ab.configs_for(side, 128, chosen):
            if side.configs == "pinned":
                assert all(kernel.configs == [chosen[name]] for name, kernel in fa.AUTOTUNED.items())
            if side.configs == "spill_free":
                assert fa.TUNED is hopper_ab.SPILL_FREE
    assert ({name: kernel.configs for name, kernel in fa.AUTOTUNED.items()}, fa.TUNED) == before


def test_without_a_gpu_or_the_interpreter_it_says_how_to_rehearse(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("TRITON_INTERPRET")
    assert hopper_ab.main(["--out", str(tmp_path)]) == 2
    assert "set TRITON_INTERPRET=1 to rehearse on the CPU with --smoke" in capsys.readouterr().err
