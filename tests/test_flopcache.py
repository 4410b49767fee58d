"""FLOP counts cached on disk: counted once per key, counted again when anything in the key changes."""

import pytest
import torch

from bench.run import flopcache, harness
from bench.run.flopcache import FlopCache
from bench.sweep.cases import Case

CPU = torch.device("cpu")


@pytest.fixture
def counted(monkeypatch):
    """Every real FLOP count the harness makes, by case phase and batch."""
    calls = []
    real = harness.count_flops

    def spy(step, model, analytic=None, backward=False):
        calls.append(backward)
        return real(step, model, analytic, backward)

    monkeypatch.setattr(harness, "count_flops", spy)
    return calls


def test_a_count_is_made_once_then_read_from_disk(tmp_path, counted):
    cache = FlopCache(tmp_path)
    case = Case("cnn", "fwdbwd", "fp32", 2)
    first = harness.model_workload(case, CPU, flop_cache=cache).flops()
    again = harness.model_workload(case, CPU, flop_cache=cache).flops()
    assert first == again == harness.model_workload(case, CPU).flops() > 0
    assert len(counted) == 2  # the cached workload counted once, the uncached one once more
    assert cache.get(flopcache.key(case)) == first


def test_precision_mode_and_memory_format_share_a_count(tmp_path, counted):
    cache = FlopCache(tmp_path)
    harness.model_workload(Case("cnn", "fwd", "fp32", 2), CPU, flop_cache=cache).flops()
    for case in (Case("cnn", "fwd", "amp_bf16", 2), Case("cnn", "fwd", "fp32", 2, memory_format="channels_last")):
        harness.model_workload(case, CPU, flop_cache=cache).flops()
    assert len(counted) == 1


@pytest.mark.parametrize("change", [{"batch": 4}, {"phase": "fwdbwd"}, {"model": "lstm"}, {"size": "full"},
                                    {"attention": "sdpa"}])
def test_a_change_in_the_key_misses(tmp_path, change):
    cache = FlopCache(tmp_path)
    fields = flopcache.key(Case("encoder", "fwd", "fp32", 2, "naive"))
    cache.put(fields, 123)
    assert cache.get(fields) == 123
    assert cache.get({**fields, **change}) is None


def test_a_code_change_invalidates_every_count(tmp_path, monkeypatch):
    cache = FlopCache(tmp_path)
    case = Case("cnn", "fwd", "fp32", 2)
    cache.put(flopcache.key(case), 123)
    monkeypatch.setattr(flopcache, "code_version", lambda: "edited")
    assert cache.get(flopcache.key(case)) is None


def test_the_code_version_follows_the_source_and_torch(tmp_path, monkeypatch):
    (tmp_path / "sweep" / "models").mkdir(parents=True)
    (tmp_path / "run").mkdir()
    for name in ("sweep/models/cnn.py", "sweep/attention.py", "run/flops.py", "run/harness.py"):
        (tmp_path / name).write_text("x = 1\n")
    monkeypatch.setattr(flopcache, "ROOT", tmp_path)
    flopcache.code_version.cache_clear()
    try:
        before = flopcache.code_version()
        flopcache.code_version.cache_clear()
        (tmp_path / "sweep/models/cnn.py").write_text("x = 2\n")
        edited = flopcache.code_version()
        flopcache.code_version.cache_clear()
        monkeypatch.setattr(torch, "__version__", "0.0.0")
        assert len({before, edited, flopcache.code_version()}) == 3
    finally:
        flopcache.code_version.cache_clear()


def test_a_damaged_entry_is_counted_again(tmp_path):
    cache = FlopCache(tmp_path)
    fields = flopcache.key(Case("cnn", "fwd", "fp32", 2))
    cache.put(fields, 5)
    cache.path(fields).write_text("{broken")
    assert cache.get(fields) is None


@pytest.mark.parametrize("model", ["cnn", "lstm", "encoder", "decoder", "resnet50"])
@pytest.mark.parametrize("phase", ["fwd", "fwdbwd"])
def test_autocast_does_the_work_fp32_counts(model, phase):
    """Why a count leaves the precision out of its key: the same model counted under amp_bf16 gives the
    fp32 count."""
    from bench.run.harness import count_flops, make_step
    from bench.sweep.models import MODELS
    from bench.sweep.precision import PRECISIONS

    spec = MODELS[model]
    attention = "naive" if spec.has_attention else None
    torch.manual_seed(0)
    net = spec.build("quick", attention)
    batch = spec.batch("quick", 2, CPU, torch.Generator().manual_seed(0))
    analytic = spec.analytic_flops(net, batch) if spec.analytic_flops else None
    counts = {name: count_flops(make_step(phase, net, batch, spec, PRECISIONS[name], CPU), net, analytic,
                                backward=phase != "fwd") for name in ("fp32", "amp_bf16")}
    assert counts["fp32"] == counts["amp_bf16"] > 0


def test_a_cache_that_cannot_be_written_costs_a_count_not_the_case(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the cache's folder should be
    cache = FlopCache(blocked / "flops")
    cache.put(flopcache.key(Case("cnn", "fwd", "fp32", 2)), 5)
    assert cache.get(flopcache.key(Case("cnn", "fwd", "fp32", 2))) is None
