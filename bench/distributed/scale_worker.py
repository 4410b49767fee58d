"""One rank of `python -m bench scale`: torchrun starts it once per rank. For each case it wraps the model
for data parallelism (DDP, or FSDP2's fully_shard), feeds each rank its own synthetic batch, warms up and
times the training step, each round between two barriers (so a round lasts as long as the slowest rank,
the GPU synchronised inside it); rank 0 decides the number of rounds for all, gathers every rank's median,
and rewrites the world size's results file (atomically) after each case. A case that fails on a rank
writes that rank's error beside the results and ends the run: the other ranks would wait for it forever."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from bench import MAX_TIME_S, MIN_ROUNDS
from bench.errors import one_line
from bench.results.rundir import RunDir, atomic_write
from bench.run.harness import make_step
from bench.run.profile import profile_steps
from bench.sweep.cases import Case
from bench.sweep.models import MODELS
from bench.sweep.precision import PRECISIONS


def ddp(model: nn.Module, device: torch.device) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def fsdp(model: nn.Module, device: torch.device) -> nn.Module:
    """FSDP2: each direct child with parameters sharded on its own, then the root."""
    from torch.distributed.fsdp import fully_shard

    for child in model.children():
        if any(True for _ in child.parameters()):
            fully_shard(child)
    return fully_shard(model)


STRATEGIES: dict[str, Callable[[nn.Module, torch.device], nn.Module]] = {"ddp": ddp, "fsdp": fsdp}
PROFILED_STEPS = 3


def error_file(out: Path, rank: int) -> Path:
    """Where a rank leaves the one line saying why its case failed."""
    return out.with_name(f"{out.stem}.rank{rank}.error")


@dataclasses.dataclass(frozen=True)
class CaseRecord:
    """What rank 0 keeps of a case: the results file holds a list of them, in the order of the jobs, which
    scale.py reads back."""

    case: dict  # the Case's fields
    strategy: str
    rounds_s: list[float]  # rank 0's, seconds per step
    rank_medians_s: list[float]  # every rank's median, rank 0 first
    warmup_rounds: int
    communication_share: float | None = None  # profiled: the collectives' share of rank 0's self time


def time_case(case: Case, strategy: str, device: torch.device, max_time: float, min_rounds: int,
              warmup_rounds: int, profile_run: Path | None = None) -> CaseRecord:
    """Warm up and time one case's step on every rank; rank 0's rounds and every rank's median. With
    `profile_run`, every rank then runs a few more steps, which rank 0 profiles: its trace goes into that run
    folder's traces/, and the collectives' share of its self time into the record."""
    rank, world = dist.get_rank(), dist.get_world_size()
    spec = MODELS[case.model]
    torch.manual_seed(0)  # the same weights everywhere (DDP would broadcast rank 0's in any case)
    model = STRATEGIES[strategy](spec.build(case.size, case.attention).to(device), device)
    batch = spec.batch(case.size, case.batch, device, torch.Generator().manual_seed(1 + rank))  # its own data
    step = make_step("step", model, batch, spec, PRECISIONS[case.precision], device)

    def timed_round() -> float:
        dist.barrier()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dist.barrier()
        return time.perf_counter() - start

    last = [timed_round() for _ in range(max(1, warmup_rounds))][-1]  # one at least: it sizes the rounds
    rounds = [max(min_rounds, math.ceil(max_time / last))]
    dist.broadcast_object_list(rounds, src=0)  # every rank must enter the same number of barriers
    times = [timed_round() for _ in range(rounds[0])]
    medians: list[float | None] = [None] * world
    dist.all_gather_object(medians, float(np.median(times)))
    share = None
    if profile_run is not None:
        name = f"{case.id}-{strategy}-w{world}"
        if rank == 0:
            run = RunDir(profile_run)
            operators, shares = profile_steps(timed_round, device, run.trace_dir(name), name, PROFILED_STEPS)
            atomic_write(run.operators_csv(name), operators.to_csv(index=False))
            atomic_write(run.breakdown_csv(name), shares.to_csv(index=False))
            share = float(shares.set_index("category")["share"].get("communication", 0.0))
        else:
            for _ in range(2 + PROFILED_STEPS):  # the same steps as rank 0's profiled ones: their collectives
                timed_round()
    return CaseRecord(dataclasses.asdict(case), strategy, times, medians, warmup_rounds, share)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=Path, required=True, help="JSON list of {case, strategy}")
    parser.add_argument("--out", type=Path, required=True, help="the results file rank 0 writes")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--max-time", type=float, default=MAX_TIME_S)
    parser.add_argument("--min-rounds", type=int, default=MIN_ROUNDS)
    parser.add_argument("--warmup-rounds", type=int, default=3)
    parser.add_argument("--profile-run", type=Path, default=None, help="profile each case into this run folder")
    parser.add_argument("--collective-timeout", type=float, default=300.0,
                        help="seconds a collective may wait for a rank before failing")
    args = parser.parse_args(argv)
    on_gpu = args.device == "cuda"
    dist.init_process_group("nccl" if on_gpu else "gloo", timeout=timedelta(seconds=args.collective_timeout))
    rank = dist.get_rank()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if on_gpu else torch.device("cpu")
    if on_gpu:
        torch.cuda.set_device(device)
    results = []
    try:
        for spec in json.loads(args.cases.read_text()):
            case = Case(**spec["case"])
            try:
                record = time_case(case, spec["strategy"], device, args.max_time, args.min_rounds, args.warmup_rounds,
                                   args.profile_run)
            except Exception as err:
                atomic_write(error_file(args.out, rank), one_line(err) + "\n")
                raise
            if rank == 0:
                results.append(record)
                atomic_write(args.out, json.dumps([dataclasses.asdict(done) for done in results]))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
