"""Model FLOP counts cached on disk, keyed by what determines them: the model, its size and batch, the phase,
the attention implementation, torch's version and the source of the code that builds and counts them. A
count costs a step under FlopCounterMode, seconds for the big models on a CPU; the cache makes it once."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from pathlib import Path

import torch

from bench import CACHE_DIR
from bench.results.rundir import atomic_write

ROOT = Path(__file__).resolve().parents[1]
# What a count depends on besides the case: the models, how a step is made and counted, the formulas.
CODE = ("sweep/models", "sweep/attention.py", "run/flops.py", "run/harness.py")


@functools.cache
def code_version() -> str:
    """A hash of torch's version and the source files in CODE: any edit to them invalidates every count."""
    digest = hashlib.sha256(torch.__version__.encode())
    for name in CODE:
        path = ROOT / name
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(ROOT).as_posix().encode() + file.read_bytes())
    return digest.hexdigest()[:16]


def key(case) -> dict:
    """The fields a model case's FLOPs depend on (not its precision, mode or memory format: they do the same
    work)."""
    return {"model": case.model, "size": case.size, "batch": case.batch, "phase": case.phase,
            "attention": case.attention, "code": code_version()}


class FlopCache:
    """One JSON file per key under `directory`: written atomically, so two sweeps can share the folder."""

    def __init__(self, directory: Path = CACHE_DIR / "flops"):
        self.directory = directory

    def path(self, fields: dict) -> Path:
        name = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]
        return self.directory / f"{name}.json"

    def get(self, fields: dict) -> int | None:
        try:
            return int(json.loads(self.path(fields).read_text())["flops"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing or damaged: counted again

    def put(self, fields: dict, flops: int) -> None:
        """Keep a count; a cache that cannot be written (read-only, full) costs a count next time, no more."""
        with contextlib.suppress(OSError):
            atomic_write(self.path(fields), json.dumps({**fields, "flops": flops}, indent=1))
