"""Unit-test set-up: Triton's interpreter (archbench's plugin, bench/run/plugin.py, turns it on where there is
no GPU), and mutation runs judged by each module's own test file."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _interpreter_dot_reads_bfloat16() -> None:
    """Triton's interpreter keeps bfloat16 as uint16 bits and its tl.dot multiplies those bits
    (triton-lang/triton#11584, unfixed in 3.8). Widen bfloat16 operands to float32 first: exact, and
    what a tensor core's fp32 accumulation computes, so the kernel under test is unchanged."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    dot = interpreter.InterpreterBuilder.create_dot

    def widen(handle):
        if handle.dtype.scalar != tl.bfloat16:
            return handle
        wide = interpreter._convert_float(handle.data, tl.bfloat16, tl.float32, None).view(np.float32)
        return interpreter.TensorHandle(wide, tl.float32)

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        return dot(self, widen(a), widen(b), d, input_precision, max_num_imprecise_acc)

    interpreter.InterpreterBuilder.create_dot = create_dot


def _interpreter_adds_through_descriptors() -> None:
    """Triton's interpreter loads and stores through tensor descriptors but has no descriptor atomics (3.8:
    no `create_descriptor_reduce`). Add one for `add`: the descriptor's in-bounds elements, by pointer."""
    from triton._C.libtriton import ir
    from triton.runtime import interpreter

    def create_descriptor_reduce(self, kind, desc, value, indices):
        assert kind == ir.DESCRIPTOR_REDUCE_KIND.ADD, f"only atomic add is emulated, not {kind}"
        ptrs, mask = desc.materialize_pointers(indices)
        return self.create_atomic_rmw(ir.ATOMIC_OP.FADD, ptrs, value, mask, ir.MEM_SEMANTIC.RELAXED, None)

    interpreter.InterpreterBuilder.create_descriptor_reduce = create_descriptor_reduce


if os.environ.get("TRITON_INTERPRET") == "1":
    _interpreter_dot_reads_bfloat16()
    _interpreter_adds_through_descriptors()


ROLES = {path.parent.name for path in Path(__file__).parents[1].glob("bench/*/__init__.py")}  # bench's subpackages


def pytest_collection_modifyitems(config, items) -> None:
    """Under mutmut, a mutant of bench/<role>/<module>.py (or of bench/<role>/<module>/...) is judged by
    tests/test_<module>.py alone: that file must pin the module, and a run over one module stays at
    minutes. Modules without such a file keep every test mutmut selected."""
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")  # e.g. bench.run.harness.x_measure__mutmut_5
    if "__mutmut_" not in mutant:
        return
    module = next(part for part in mutant.split(".")[1:] if part not in ROLES)
    own = [item for item in items if item.path.name == f"test_{module}.py"]
    if own:
        config.hook.pytest_deselected(items=[item for item in items if item not in own])
        items[:] = own


@pytest.fixture
def bench_main_in_a_fresh_process():
    """Runs `python -m bench ARGS` in a new interpreter: whether it loaded torch, and its exit code."""
    script = ("import sys\nfrom bench.__main__ import main\ncode = main(sys.argv[1:])\n"
              "print('torch' in sys.modules, code)")

    def run(*args: str) -> tuple[bool, int]:
        done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300,
                              cwd=Path(__file__).resolve().parent.parent)
        assert done.stdout.strip(), done.stderr
        loaded, code = done.stdout.splitlines()[-1].split()
        return loaded == "True", int(code)

    return run


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (Debian's package, which .ci/run installs) driven by Playwright."""
    if CHROMIUM is None:
        pytest.skip("needs Chromium: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture
def open_offline(browser):
    """Open a file in a fresh page: the page, every URL it asked for, and every script error."""

    def open_page(path: Path):
        page = browser.new_page()
        requests, errors = [], []
        page.on("request", lambda request: requests.append(request.url))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(path.as_uri())
        return page, requests, errors

    return open_page
