"""Running a case: the pytest session, the harness that times it, its FLOPs, device time, profiler passes and
instruction counts."""
