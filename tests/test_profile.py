"""Profiling: traces land where TensorBoard's PyTorch Profiler plugin lists and opens them, and the
breakdown comes from the profiler's key_averages()."""

import contextlib
import gzip
import json
import socket
import subprocess
import sys
import time
import urllib.request
from types import SimpleNamespace

import pytest
import torch

from bench.results.categories import categorise
from bench.run.profile import profile_case
from bench.sweep.cases import Case

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("traces")
    tables = {attn: profile_case(Case("encoder", "fwdbwd", "fp32", 2, attn), CPU, logdir / f"encoder-{attn}",
                                 active_steps=2) for attn in ("naive", "sdpa")}
    return logdir, tables


@pytest.fixture(scope="module")
def traces(profiled):
    return profiled[0]


def test_breakdown_shares_come_from_the_profiler_and_sum_to_one(profiled):
    _, tables = profiled
    for operators, shares in tables.values():
        assert shares["share"].sum() == pytest.approx(1.0)
        assert {"attention", "matmul/conv", "normalisation", "elementwise"} <= set(shares["category"])
        assert operators["self_us"].is_monotonic_decreasing and operators["calls"].min() >= 1
        by_category = operators.groupby("category")["self_us"].sum()
        assert shares.set_index("category")["self_us"].to_dict() == pytest.approx(by_category.to_dict())
    sdpa_ops = tables["sdpa"][0]
    assert "attention" in set(sdpa_ops.loc[sdpa_ops["name"].str.contains("scaled_dot_product"), "category"])


@pytest.mark.parametrize(("name", "category"), [
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"), ("_attn_fwd", "attention"),
    ("aten::addmm", "matmul/conv"), ("sm90_xmma_gemm_bf16bf16_bf16f32", "matmul/conv"),
    ("aten::native_layer_norm", "normalisation"), ("aten::copy_", "memory copy"),
    ("Memcpy DtoD (Device -> Device)", "memory copy"), ("aten::gelu", "elementwise"),
    ("void at::native::vectorized_elementwise_kernel<4>", "elementwise"), ("aten::empty", "other"),
])
def test_operator_names_fall_into_their_category(name, category):
    assert categorise(name) == category


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read()
        gzipped = response.headers.get("Content-Encoding") == "gzip"  # the trace view is served compressed
    return json.loads(gzip.decompress(body) if gzipped else body)


@pytest.mark.e2e
def test_traces_load_in_tensorboard_profiler_plugin(traces):
    pytest.importorskip("tensorboard", reason="TensorBoard is not installed")
    pytest.importorskip("torch_tb_profiler", reason="torch-tb-profiler is not installed")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(traces), "--host",
                               "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/data/plugin/pytorch_profiler"
    try:
        deadline, runs = time.monotonic() + 90, {}
        while time.monotonic() < deadline:
            try:
                runs = get_json(f"{base}/runs")
                if not runs["loading"] and len(runs["runs"]) == 2:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert sorted(runs["runs"]) == ["encoder-naive", "encoder-sdpa"]
        for run in runs["runs"]:
            views = get_json(f"{base}/views?run={run}")
            assert {"Overview", "Operator", "Trace"} <= set(views)  # Kernel appears only with a GPU
            worker = get_json(f"{base}/workers?run={run}&view=Overview")[0]
            span = get_json(f"{base}/spans?run={run}&worker={worker}")[0]
            query = f"run={run}&worker={worker}&span={span}"
            assert get_json(f"{base}/overview?{query}")["steps"]["rows"]
            operators = get_json(f"{base}/operation?{query}&group_by=Operation")["host_total_time"]["rows"]
            assert any(name == "aten::addmm" for name, _ in operators)
            assert get_json(f"{base}/trace?{query}")["traceEvents"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_profiled_pass_keeps_the_timed_passs_cudnn_setting(monkeypatch, tmp_path):
    seen = []

    @contextlib.contextmanager
    def spy(enabled):
        seen.append(("enter", enabled))
        yield
        seen.append(("exit", enabled))

    monkeypatch.setattr("bench.run.profile.cudnn_benchmark", spy)
    monkeypatch.setattr("bench.run.profile.WORKLOADS", {Case: lambda case, device: SimpleNamespace(
        step=lambda: seen.append(("step", None)), flops=lambda: 0)})
    profile_case(Case("cnn", "fwd", "fp32", 2), CPU, tmp_path / "t", active_steps=1)
    assert seen == [("enter", False), *[("step", None)] * 3, ("exit", False)]  # on a CPU: cuDNN not asked
