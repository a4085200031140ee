"""Peak-memory measurement around a call: CUDA max-allocated, or sampled process RSS on Linux CPUs."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class PeakMemory:
    """Result holder: ``mb`` is the peak in MiB, or ``None`` with ``reason`` when it cannot be measured."""

    def __init__(self) -> None:
        self.mb: float | None = None
        self.reason = ""


@contextmanager
def peak_memory(device: torch.device, interval_s: float = 0.005) -> Iterator[PeakMemory]:
    """Measure peak memory of the enclosed block.

    On CUDA: ``torch.cuda.max_memory_allocated`` (tensors only). On CPU (Linux): the largest growth of the
    process's resident set size over its value at entry, sampled every ``interval_s`` by a thread.
    Elsewhere the result carries a reason instead of a number.
    """
    res = PeakMemory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield res
        torch.cuda.synchronize(device)
        res.mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        return
    start = _rss_bytes()
    if start is None or device.type != "cpu":
        res.reason = f"peak memory is not measurable on {device.type} on this platform"
        yield res
        return
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval_s):
            v = _rss_bytes()
            if v is not None and v > peak[0]:
                peak[0] = v

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield res
    finally:
        stop.set()
        t.join()
        end = _rss_bytes() or start
        res.mb = max(peak[0], end) / 2**20 - start / 2**20
