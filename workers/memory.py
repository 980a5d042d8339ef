"""How many images fit in one batch: a memory model per batch key, a budget, and OOM caps.

At start-up the worker runs each variant at its default size with batch sizes 1 and 2 and records
the peak memory of each run; the fit `peak(b) = base + b * per_image` gives the largest batch
within the budget. Other sizes scale `per_image` by their pixel count (activations grow with the
number of tokens; attention runs through SDPA, which keeps them linear).

Peak memory: on CUDA, `torch.cuda.max_memory_allocated` around the run (exact for the caching
allocator). On CPU there is no allocator statistic, so a thread samples the process's resident set
every 2 ms during the run, after `malloc_trim` has returned freed memory to the system: an honest
estimate (it can miss a peak shorter than 2 ms and counts anything else the process allocates).

On an out-of-memory error the worker halves the batch and lowers the key's cap (`lower`), so the
same batch size is not tried again.
"""

from __future__ import annotations

import ctypes
import os
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

MARGIN = 0.9  # keep 10% of the budget free for fragmentation and the decoder's peak


def parse_bytes(text: str) -> int:
    """'8GiB', '512MiB', '4e9' or plain bytes."""
    text = text.strip()
    units = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "kb": 10**3, "mb": 10**6, "gb": 10**9}
    for suffix, scale in units.items():
        if text.lower().endswith(suffix):
            return int(float(text[: -len(suffix)]) * scale)
    return int(float(text))


def default_budget(device: torch.device) -> int:
    """Free memory now, minus a margin: what batches may use."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * MARGIN)
    with open("/proc/meminfo") as meminfo:
        fields = dict(line.split(":", 1) for line in meminfo)
    return int(int(fields["MemAvailable"].split()[0]) * 1024 * MARGIN)


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: the estimate is just less tight
        pass


def process_peak(device: torch.device) -> int:
    """The peak memory so far: CUDA's allocator peak, or the process's peak resident set on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def measure_peak(run: Callable[[], object], device: torch.device) -> int:
    """Peak memory (bytes above the starting level) while `run()` executes."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - start)
    _trim()
    start = _rss()
    peak = start
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run()
    finally:
        done.set()
        sampler.join()
    return max(0, max(peak, _rss()) - start)


@dataclass
class Fit:
    base: int
    per_image: int
    pixels: int  # the image size the fit was measured at


@dataclass
class MemoryModel:
    budget: int
    operator_cap: int
    fits: dict[str, Fit] = field(default_factory=dict)  # variant -> fit at its default size
    oom_caps: dict[tuple, int] = field(default_factory=dict)  # batch key -> cap lowered by an OOM

    def profile(self, variant: str, pixels: int, run_batch: Callable[[int], object], device: torch.device) -> Fit:
        run_batch(1)  # warm-up: first-call allocations are not per-image cost
        one = measure_peak(lambda: run_batch(1), device)
        two = measure_peak(lambda: run_batch(2), device)
        per_image = max(1, two - one)
        fit = Fit(base=max(0, one - per_image), per_image=per_image, pixels=pixels)
        self.fits[variant] = fit
        return fit

    def cap(self, key: tuple) -> int:
        """The most images one batch of this key may hold."""
        variant, _task, width, height = key[:4]
        cap = self.operator_cap
        fit = self.fits.get(variant)
        if fit is not None:
            per_image = fit.per_image * (width * height) / fit.pixels
            cap = min(cap, int((self.budget - fit.base) // max(per_image, 1)))
        if key in self.oom_caps:
            cap = min(cap, self.oom_caps[key])
        return max(1, cap)

    def lower(self, key: tuple, failed_size: int) -> int:
        """After an OOM at `failed_size` images: the key's cap becomes half of it."""
        self.oom_caps[key] = max(1, failed_size // 2)
        return self.oom_caps[key]
