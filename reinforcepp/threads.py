"""How many CPU threads torch uses. Two processes that each spin one thread per core on the same cores
slow each other down many times over (oversubscription), so the default is the cores this process may use,
shared among torchrun's ranks on the machine, and the choice is printed."""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity: taskset, cgroup cpusets), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def default_threads() -> tuple[int, str]:
    """(threads, why): $OMP_NUM_THREADS when set, else the available cores over torchrun's local ranks."""
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        return int(omp), "OMP_NUM_THREADS"
    cores, local_ranks = available_cores(), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if local_ranks > 1:
        return max(1, cores // local_ranks), f"{cores} cores this process may use / {local_ranks} local ranks"
    return cores, f"the {cores} cores this process may use"


def apply_threads(threads: int | None, *, announce: bool = True) -> int:
    """torch.set_num_threads(threads or the default) and one line saying how many and why; returns the count."""
    import torch

    count, why = (threads, "threads") if threads is not None else default_threads()
    torch.set_num_threads(count)
    if announce:
        print(f"threads: {count} ({why}; set threads=N to change)", flush=True)
    return count
