"""What the host machine offers the runtime (torch-free: the edge runtime imports it)."""

from __future__ import annotations

import os


def cpu_affinity() -> int | None:
    """How many CPUs this process's affinity mask allows (``taskset``, a container's cpuset); None where the
    platform has no affinity call (macOS)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return None


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, which can be fewer than the machine has; every CPU
    where the platform has none."""
    return cpu_affinity() or os.cpu_count() or 1
