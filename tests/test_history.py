"""The history: records made from runs, the store (idempotent, order-free, mergeable), each series' trend and
its steps' states, and the command line's output and exit codes, on throwaway repositories."""

import json
import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from bench.__main__ import main
from bench.history.record import machine_key, make_record
from bench.history.store import Store
from bench.history.trend import Thresholds, select, trends

ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@t"}


def make_repo(path, n):
    """A repository of n empty commits, 'commit 0' to 'commit n-1', a minute apart; their hashes, oldest first."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    for i in range(n):
        date = f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}+00:00"
        subprocess.run(["git", "-C", str(path), "commit", "-q", "--allow-empty", "-m", f"commit {i}"], check=True,
                       env={**ENV, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date})
    return subprocess.run(["git", "-C", str(path), "rev-list", "--reverse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.split()


def run_folder(root, run_id, commit, medians, device_name="AMD EPYC", threads=2, torch="2.14.1", failed=(),
               instructions=None):
    """A run folder whose results.csv holds a row per case: its median (s) with a +-1 % interval, or an error
    for the cases in `failed`; its instruction count where given."""
    rows = [{"run_id": run_id, "case_id": case, "model": case.split("-")[0], "status": "ok", "median_s": median,
             "ci_low_s": median * 0.99, "ci_high_s": median * 1.01, "rounds": 20, "device": "cpu",
             "device_name": device_name, "cpu_threads": threads, "torch": torch, "python": "3.11.7",
             "size": "quick", "git_commit": commit, "instructions": (instructions or {}).get(case)}
            | ({"status": "error", "reason": "error: RuntimeError: broken", "median_s": None} if case in failed else {})
            for case, median in medians.items()]
    (root / run_id).mkdir(parents=True)
    pd.DataFrame(rows).to_csv(root / run_id / "results.csv", index=False)
    return root / run_id


@pytest.fixture
def repo(tmp_path):
    return tmp_path / "repo", make_repo(tmp_path / "repo", 30)


def planted(root, commits, step_at=20, ratio=1.10, sigma=0.01, seed=0, machine="AMD EPYC", torch_at=None,
            until=None, gru_fails_at=None, counts=False):
    """A run a commit: cnn with a step of `ratio` at commit `step_at` (back at commit `until`), gru flat
    (failing from `gru_fails_at`); lognormal noise; with `counts`, cnn's instructions too (0.01 % noise)."""
    rng = np.random.default_rng(seed)
    runs = []
    for i, commit in enumerate(commits):
        factor = ratio if step_at <= i < (until or len(commits)) else 1.0
        torch = "2.15.0" if torch_at is not None and i >= torch_at else "2.14.1"
        failed = ("gru-fwd-fp32-b2",) if gru_fails_at is not None and i >= gru_fails_at else ()
        runs.append(run_folder(root, f"run-{machine[:3]}-{i:02d}", commit,
                               {"cnn-fwd-fp32-b2": 0.010 * factor * rng.lognormal(0, sigma),
                                "gru-fwd-fp32-b2": 0.004 * rng.lognormal(0, sigma)}, device_name=machine,
                               torch=torch, failed=failed,
                               instructions={"cnn-fwd-fp32-b2": 2e7 * factor * rng.lognormal(0, 1e-4)} if counts
                               else None))
    return runs


def test_a_record_keeps_commit_order_machine_and_each_case_s_interval(repo, tmp_path):
    path, commits = repo
    run = run_folder(tmp_path / "reports", "r1", commits[4], {"cnn-fwd-fp32-b2": 0.010})
    record = make_record(run, path)
    assert (record["commit"], record["order"], record["subject"], record["branch"]) == (commits[4], 5, "commit 4",
                                                                                        "main")
    assert record["machine"] == "amd-epyc-2t" and record["environment"]["torch"] == "2.14.1"
    assert record["cases"]["cnn-fwd-fp32-b2"] == {"status": "ok", "reason": "", "size": "quick", "host": {
        "median": 0.010, "low": 0.0099, "high": 0.0101, "rounds": 20.0, "min": None, "iqr": None}}
    assert make_record(run, path, machine="ci-runner", branch="dev")["machine"] == "ci-runner"
    assert machine_key("NVIDIA H200", 16.0) == "nvidia-h200-16t"


def test_a_run_of_uncommitted_code_or_of_an_unknown_commit_is_refused_in_one_line(repo, tmp_path, capsys):
    path, commits = repo
    dirty = run_folder(tmp_path / "reports", "dirty", commits[0] + "+dirty", {"cnn-fwd-fp32-b2": 0.010})
    store = tmp_path / "store"
    assert main(["history", "add", str(dirty), "--store", str(store), "--repo", str(path)]) == 2
    assert capsys.readouterr().err == (f"error: {dirty}: made from a tree with uncommitted changes "
                                       f"({commits[0]}+dirty); its figures belong to no commit (--allow-dirty adds "
                                       "it anyway, at that commit)\n")
    assert not store.exists()
    assert main(["history", "add", str(dirty), "--store", str(store), "--repo", str(path), "--allow-dirty"]) == 0
    unknown = run_folder(tmp_path / "reports", "unknown", "f" * 40, {"cnn-fwd-fp32-b2": 0.010})
    assert main(["history", "add", str(unknown), "--store", str(store), "--repo", str(path)]) == 2
    assert capsys.readouterr().err.endswith(f"error: {'f' * 40}: not a commit of the repository at {path} "
                                            "(fetch it, or pass --repo)\n")


def test_pytest_benchmark_s_own_json_is_read_with_its_commit_info(repo, tmp_path):
    path, commits = repo
    saved = tmp_path / "0001_x.json"
    saved.write_text(json.dumps({
        "machine_info": {"cpu": {"brand_raw": "Intel Xeon", "count": 4}, "python_version": "3.11.7"},
        "commit_info": {"id": commits[7], "dirty": False, "branch": "feature"},
        "benchmarks": [{"fullname": "tests/test_x.py::test_sum[small]", "stats": {
            "median": 0.002, "rounds": 7, "data": [0.0021, 0.0019, 0.002, 0.0022, 0.0018, 0.002, 0.002]}}]}))
    record = make_record(saved, path)
    assert (record["machine"], record["branch"], record["order"]) == ("intel-xeon-4t", "feature", 8)
    assert record["cases"]["tests/test_x.py::test_sum[small]"]["host"] == {
        "median": 0.002, "low": 0.0018, "high": 0.0022, "rounds": 7, "min": None, "iqr": None}
    assert record["run_id"].startswith("0001_x-")  # pytest-benchmark numbers its files per folder: made unique
    info = json.loads(saved.read_text())
    info["commit_info"]["dirty"] = True
    saved.write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"uncommitted changes \(" + commits[7] + r"\+dirty\)"):
        make_record(saved, path)


def test_a_run_of_several_commits_or_none_a_case_twice_or_a_shallow_clone_is_refused(repo, tmp_path):
    path, commits = repo
    mixed = run_folder(tmp_path, "mixed", commits[0], {"cnn-fwd-fp32-b2": 0.01, "gru-fwd-fp32-b2": 0.01})
    frame = pd.read_csv(mixed / "results.csv")
    frame.loc[1, "git_commit"] = commits[1]
    frame.to_csv(mixed / "results.csv", index=False)
    with pytest.raises(ValueError, match=rf"several commits recorded \({commits[0][:10]}, {commits[1][:10]}\)"):
        make_record(mixed, path)
    frame["git_commit"] = None
    frame.to_csv(mixed / "results.csv", index=False)
    with pytest.raises(ValueError, match=r"no git commit recorded \(a run made outside a git checkout\)"):
        make_record(mixed, path)
    saved = tmp_path / "twice.json"
    saved.write_text(json.dumps({"commit_info": {"id": commits[0]}, "benchmarks": [
        {"fullname": "t.py::test_a", "stats": {"median": median}} for median in (1.0, 2.0)]}))
    with pytest.raises(ValueError, match=r"the case t.py::test_a twice"):
        make_record(saved, path)
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "3", path.as_uri(), str(shallow)], check=True)
    with pytest.raises(ValueError, match=r"is a shallow clone: first-parent order needs the whole history"):
        make_record(run_folder(tmp_path, "late", commits[-1], {"cnn-fwd-fp32-b2": 0.01}), shallow)


def test_a_run_from_its_folder_and_from_its_json_is_one_run_and_an_id_at_another_commit_is_refused(repo, tmp_path):
    path, commits = repo
    run = run_folder(tmp_path, "r1", commits[3], {"cnn-fwd-fp32-b2": 0.010})
    rows = pd.read_csv(run / "results.csv").to_dict("records")
    (run / "benchmark.json").write_text(json.dumps({"commit_info": {"id": commits[3]}, "benchmarks": [
        {"fullname": f"bench/test_models.py::test_model[{row['case_id']}]", "stats": {"median": row["median_s"]},
         "extra_info": row} for row in rows]}, default=str))
    store = Store(tmp_path / "store")
    assert store.add(make_record(run, path)) and not store.add(make_record(run / "benchmark.json", path))
    again = run_folder(tmp_path / "elsewhere", "r1", commits[4], {"cnn-fwd-fp32-b2": 0.020})
    with pytest.raises(ValueError, match=rf"a run with the id r1 at another commit \({commits[3][:10]}\) is in the "
                                         "history already; give each run its own --run-id"):
        store.add(make_record(again, path))
    assert len(store.records()) == 1 and store.points()["value"].tolist() == [0.010]


def test_adding_a_run_twice_changes_nothing_and_the_order_of_adding_does_not_matter(repo, tmp_path):
    path, commits = repo
    runs = planted(tmp_path / "reports", commits)
    stores = [Store(tmp_path / "forward"), Store(tmp_path / "shuffled")]
    for run in runs:
        assert stores[0].add(make_record(run, path))
    for i in np.random.default_rng(1).permutation(len(runs)):
        stores[1].add(make_record(runs[i], path))
    first = stores[0].run_file(make_record(runs[0], path))
    before = first.read_bytes(), first.stat().st_mtime_ns
    assert not stores[0].add(make_record(runs[0], path))
    assert (first.read_bytes(), first.stat().st_mtime_ns) == before
    frames = [store.points() for store in stores]
    pd.testing.assert_frame_equal(*frames)
    assert len(frames[0]) == 60 and frames[0]["order"].is_monotonic_increasing


def test_a_planted_step_is_an_open_regression_at_its_commit_until_accepted(repo, tmp_path, capsys):
    path, commits = repo
    store = tmp_path / "store"
    runs = planted(tmp_path / "reports", commits)
    assert main(["history", "add", *map(str, runs), "--store", str(store), "--repo", str(path)]) == 0
    capsys.readouterr()
    assert main(["history", "show", "--store", str(store)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "### archbench history: 1 open regression, 0 cases failing"
    assert out[2] == "2 series over 30 commits; 1 steps (1 open); 0 outlier points."
    [row] = [line for line in out if line.startswith("| open |")]
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert cells[1:4] == ["`amd-epyc-2t/quick/cnn-fwd-fp32-b2/host`", commits[20][:10], "commit 20"]
    assert float(cells[4]) == pytest.approx(1.10, abs=0.02) and cells[6] == "5%" and cells[7] == ""
    assert main(["history", "show", "--store", str(store), "--case", "gru"]) == 0  # the flat case alone
    assert main(["history", "show", "--store", str(store), "--since", commits[21][:8]]) == 0  # before --since
    assert main(["history", "show", "--store", str(store), "--threshold", "15"]) == 0  # under the threshold
    assert main(["history", "show", "--store", str(store), "--case-threshold", "cnn=12"]) == 0
    capsys.readouterr()
    assert main(["history", "accept", "amd-epyc-2t/quick/cnn-fwd-fp32-b2/host", commits[20][:8], "--store",
                 str(store)]) == 0
    assert capsys.readouterr().out.startswith(f"accepted the step of amd-epyc-2t/quick/cnn-fwd-fp32-b2/host at "
                                              f"{commits[20][:10]}")
    assert main(["history", "show", "--store", str(store)]) == 0
    assert "| accepted | `amd-epyc-2t/quick/cnn-fwd-fp32-b2/host` |" in capsys.readouterr().out


def test_a_step_that_reverts_is_recovered_and_one_with_the_environment_is_labelled(repo, tmp_path):
    path, commits = repo
    store = Store(tmp_path / "store")
    for run in planted(tmp_path / "reports", commits, step_at=10, torch_at=10):
        store.add(make_record(run, path))
    [cnn, gru] = trends(store.points(), Thresholds(), store.accepted())
    [change] = cnn.changes
    assert (change.commit, change.state, change.environment) == (commits[10], "open", "torch 2.14.1 -> 2.15.0")
    assert gru.changes == [] and cnn.points["environment"].nunique() == 2
    fixed = Store(tmp_path / "fixed")  # the slowdown went away at commit 20
    for run in planted(tmp_path / "fixed-runs", commits, step_at=10, until=20):
        fixed.add(make_record(run, path))
    changes = trends(select(fixed.points(), "cnn"), Thresholds(), set())[0].changes
    assert [(c.commit, c.state) for c in changes] == [(commits[10], "recovered"), (commits[20], "faster")]


def test_merging_two_machines_stores_keeps_their_series_apart(repo, tmp_path, capsys):
    path, commits = repo
    one, two = Store(tmp_path / "one"), Store(tmp_path / "two")
    for run in planted(tmp_path / "epyc", commits, step_at=20):
        one.add(make_record(run, path))
    for run in planted(tmp_path / "xeon", commits, step_at=99, machine="Intel Xeon", seed=3):
        two.add(make_record(run, path))
    shutil.copytree(two.path, one.path, dirs_exist_ok=True)  # merging is copying
    found = trends(one.points(), Thresholds(), set())
    assert [t.series for t in found] == ["amd-epyc-2t/quick/cnn-fwd-fp32-b2/host",
                                         "amd-epyc-2t/quick/gru-fwd-fp32-b2/host",
                                         "intel-xeon-2t/quick/cnn-fwd-fp32-b2/host",
                                         "intel-xeon-2t/quick/gru-fwd-fp32-b2/host"]
    assert all(len(t.points) == 30 and t.points["runs"].eq(1).all() for t in found)
    assert [len(t.changes) for t in found] == [1, 0, 0, 0]


def test_several_runs_of_a_commit_are_one_point_at_their_median(repo, tmp_path):
    path, commits = repo
    store = Store(tmp_path / "store")
    for i, median in enumerate([0.010, 0.030, 0.011]):
        store.add(make_record(run_folder(tmp_path / "r", f"r{i}", commits[3], {"cnn-fwd-fp32-b2": median}), path))
    [found] = trends(store.points(), Thresholds(), set())
    assert found.points[["value", "runs"]].values.tolist() == [[0.011, 3]]


@pytest.mark.parametrize(("argv", "message"), [
    (["show", "--case", "("], "error: --case (: not a regular expression (missing ), unterminated subpattern at "
                                    "position 0)"),
    (["show", "--case-threshold", "cnn"], "error: --case-threshold cnn: expected RE=PCT, e.g. 'resnet50=8'"),
    (["accept", "nope/quick/cnn-fwd-fp32-b2/host", "abc"], "error: nope/quick/cnn-fwd-fp32-b2/host: no such series "
     "in {store} (series of that case: amd-epyc-2t/quick/cnn-fwd-fp32-b2/host)"),
    (["accept", "amd-epyc-2t/quick/cnn-fwd-fp32-b2/host", "zz"], "error: zz: no commit of "
     "amd-epyc-2t/quick/cnn-fwd-fp32-b2/host start so; give more of the hash"),
])
def test_unusable_input_exits_2_in_one_line(repo, tmp_path, capsys, argv, message):
    path, commits = repo
    store = Store(tmp_path / "store")
    store.add(make_record(run_folder(tmp_path / "r", "r", commits[0], {"cnn-fwd-fp32-b2": 0.01}), path))
    assert main(["history", *argv, "--store", str(store.path)]) == 2
    assert capsys.readouterr().err == message.format(store=store.path) + "\n"


def test_an_empty_store_says_how_to_fill_it(tmp_path, capsys):
    assert main(["history", "show", "--store", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'none'}: holds no runs (python -m bench history add RUN "
                                       "adds them)\n")


def test_the_page_draws_offline_in_chromium_with_regressions_on_top_filters_and_hover(repo, tmp_path, open_offline,
                                                                                        capsys):
    path, commits = repo
    store = tmp_path / "store"
    runs = planted(tmp_path / "epyc", commits, torch_at=25) + planted(tmp_path / "xeon", commits, step_at=99,
                                                                      machine="Intel Xeon", seed=3)
    assert main(["history", "add", *map(str, runs), "--store", str(store), "--repo", str(path)]) == 0
    out = tmp_path / "page"
    assert main(["history", "page", "--store", str(store), "--out", str(out)]) == 0
    assert capsys.readouterr().err.endswith(f"wrote {out / 'index.html'} and {out / 'history.md'}\n")
    assert (out / "history.md").read_text().startswith("### archbench history: 1 open regression, 0 cases failing\n")
    page, requests, errors = open_offline(out / "index.html")
    page.wait_for_selector("div.series .plotly .scatterlayer .point", timeout=30_000)
    assert page.locator("h2").all_inner_texts() == ["Open regressions (1)", "Trends"]
    [link] = page.locator("table a").all()
    assert link.inner_text() == "amd-epyc-2t/quick/cnn-fwd-fp32-b2/host"
    assert link.get_attribute("href") == "#s-amd-epyc-2t_quick_cnn-fwd-fp32-b2_host"
    assert page.locator("div.series").count() == 4 and page.locator("div.series .js-plotly-plot").count() == 4
    cnn = page.locator("div.series").first
    assert cnn.locator(".scatterlayer .point").count() == 30  # a point a commit
    labels = [text.text_content() for text in cnn.locator(".annotation-text").all()]  # SVG: no inner text
    assert labels[0].startswith("open x1.1") and labels[1:] == ["environment"]  # the step; torch at commit 25
    box = cnn.locator(".scatterlayer .point").nth(20).bounding_box()  # plotly's drag layer takes the pointer
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector(".hoverlayer .hovertext", timeout=10_000)
    assert page.locator(".hoverlayer .hovertext").text_content().startswith(f"{commits[20][:10]} commit 20")
    page.fill("#q", "gru")
    assert page.inner_text("#shown") == "2"
    page.fill("#q", "")
    page.check("#steps")
    assert page.inner_text("#shown") == "1"
    page.select_option("#machine", "intel-xeon-2t")
    assert page.inner_text("#shown") == "0"
    assert requests == [(out / "index.html").as_uri()] and errors == []


def test_instruction_counts_step_at_one_percent_and_a_tail_step_is_suspected_until_three_runs_follow(repo, tmp_path,
                                                                                                     capsys):
    path, commits = repo
    store = tmp_path / "store"
    runs = planted(tmp_path / "r", commits, step_at=27, ratio=1.03, counts=True)  # three runs at the new level
    assert main(["history", "add", *map(str, runs[:-1]), "--store", str(store), "--repo", str(path)]) == 0
    assert main(["history", "show", "--store", str(store)]) == 0  # two runs after it: suspected, not failing
    out = capsys.readouterr().out
    assert f"| suspected | `amd-epyc-2t/quick/cnn-fwd-fp32-b2/instructions` | {commits[27][:10]} |" in out
    assert main(["history", "add", str(runs[-1]), "--store", str(store), "--repo", str(path)]) == 0
    assert main(["history", "show", "--store", str(store)]) == 1
    out = capsys.readouterr().out
    row = f"| open | `amd-epyc-2t/quick/cnn-fwd-fp32-b2/instructions` | {commits[27][:10]} | commit 27 | 1.030 | "
    assert row + "20 -> 20.6 M instr | 1% |  |" in out
    assert "/host`" not in out  # 3 % in time: under its 5 % threshold


def test_a_case_that_starts_failing_fails_show_and_an_outlier_does_not(repo, tmp_path, capsys):
    path, commits = repo
    store = tmp_path / "store"
    runs = planted(tmp_path / "r", commits, step_at=99, gru_fails_at=28)
    spike = pd.read_csv(runs[12] / "results.csv")
    spike.loc[spike["case_id"] == "cnn-fwd-fp32-b2", "median_s"] *= 2
    spike.to_csv(runs[12] / "results.csv", index=False)
    assert main(["history", "add", *map(str, runs), "--store", str(store), "--repo", str(path)]) == 0
    capsys.readouterr()
    assert main(["history", "show", "--store", str(store)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "### archbench history: 0 open regressions, 1 case failing"
    assert out[2] == "2 series over 30 commits; 0 steps (none); 1 outlier points."
    assert out[-2] == (f"| error | `amd-epyc-2t/quick/gru-fwd-fp32-b2` | {commits[28][:10]} | commit 28 | "
                       f"{commits[27][:10]} | error: RuntimeError: broken |")
    assert main(["history", "show", "--store", str(store), "--since", "HEAD~0", "--repo", str(path)]) == 0


def test_runs_of_two_branches_need_a_branch_chosen(repo, tmp_path, capsys):
    path, commits = repo
    store = tmp_path / "store"
    runs = planted(tmp_path / "r", commits)
    assert main(["history", "add", *map(str, runs[:20]), "--store", str(store), "--repo", str(path)]) == 0
    assert main(["history", "add", *map(str, runs[20:]), "--branch", "dev", "--store", str(store), "--repo",
                 str(path)]) == 0
    capsys.readouterr()
    assert main(["history", "show", "--store", str(store)]) == 2
    assert capsys.readouterr().err == ("error: --branch: the history holds runs of several branches (dev, main); "
                                       "choose one\n")
    assert main(["history", "show", "--store", str(store), "--branch", "main"]) == 0  # the step is on dev
    assert "1 series" not in capsys.readouterr().out
    assert main(["history", "show", "--store", str(store), "--branch", "nope"]) == 2
    assert capsys.readouterr().err == f"error: {store}: no runs match --branch nope\n"


def test_a_gpu_run_keeps_device_time_with_its_interval_from_the_device_rounds(repo, tmp_path):
    path, commits = repo
    run = run_folder(tmp_path, "gpu", commits[2], {"cnn-fwd-fp32-b2": 0.0030}, device_name="NVIDIA H200",
                     threads=16)
    frame = pd.read_csv(run / "results.csv").assign(device="cuda", device_s=0.0021, min_s=0.0029, iqr_s=0.0001)
    frame.to_csv(run / "results.csv", index=False)
    device = [0.0020 + i * 0.00001 for i in range(20)]
    (run / "rounds").mkdir()
    (run / "rounds" / "cnn-fwd-fp32-b2.json").write_text(json.dumps({
        "case_id": "cnn-fwd-fp32-b2", "device": "cuda", "rounds_s": [0.003] * 20, "device_rounds_s": device,
        "device_method": "graph"}))
    record = make_record(run, path)
    assert record["machine"] == "nvidia-h200-16t"
    kept = record["cases"]["cnn-fwd-fp32-b2"]
    assert kept["host"] | {"median": 0.0030} == {"median": 0.0030, "low": 0.00297, "high": 0.00303, "rounds": 20,
                                                  "min": 0.0029, "iqr": 0.0001}
    assert kept["device"] == {"median": 0.0021, "low": device[5], "high": device[14], "rounds": 20}  # 20: ranks 6, 15
