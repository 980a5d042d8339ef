"""Which started jobs run next: highest priority first, with aging so low-priority work never starves.

A job's score is its tier priority plus `aging_per_s` for every second it has waited since it was
submitted. With the shipped tiers (free 0, paid 10) and aging 1/s, a free job that has waited 10 s
ranks with a paid job that has just arrived, so under a constant paid load free jobs still run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from store.queue import Delivery
from store.records import Job


@dataclass
class Pending:
    delivery: Delivery
    job: Job

    def score(self, now: float, aging_per_s: float) -> float:
        return self.job.priority + aging_per_s * max(0.0, now - self.job.created_at)


class Scheduler:
    def __init__(self, aging_per_s: float) -> None:
        self.aging_per_s = aging_per_s
        self.pending: list[Pending] = []

    def __len__(self) -> int:
        return len(self.pending)

    def add(self, items: list[Pending]) -> None:
        known = {p.delivery.entry_id for p in self.pending}
        self.pending += [item for item in items if item.delivery.entry_id not in known]

    def _ranked(self) -> list[Pending]:
        now = time.time()
        return sorted(self.pending, key=lambda p: (-p.score(now, self.aging_per_s), p.job.created_at))

    def next_key(self) -> tuple | None:
        """The batch key of the best waiting job."""
        ranked = self._ranked()
        return ranked[0].job.batch_key if ranked else None

    def take(self, key: tuple, max_images: int) -> list[Pending]:
        """The best jobs of this batch key whose images fit in max_images (at least one job, so a
        job with more images than the cap still runs, alone)."""
        chosen: list[Pending] = []
        images = 0
        for item in self._ranked():
            if item.job.batch_key != key:
                continue
            if chosen and images + item.job.n > max_images:
                continue
            chosen.append(item)
            images += item.job.n
            if images >= max_images:
                break
        taken = {id(c) for c in chosen}
        self.pending = [p for p in self.pending if id(p) not in taken]
        return chosen
