"""Start a worker: load the catalog's pipelines onto the device, measure their memory, then run the
loop until SIGTERM."""

from __future__ import annotations

import logging
import signal

import torch

from models.interface import ImageRequest, Pipeline
from models.loading import load_pipeline
from store.catalog import Variant, load_catalog
from workers.memory import MemoryModel, default_budget, parse_bytes
from workers.settings import WorkerSettings
from workers.worker import Worker

log = logging.getLogger("fluxgate.worker")


def build_memory_model(settings: WorkerSettings, pipelines: dict[str, Pipeline],
                       variants: dict[str, Variant]) -> MemoryModel:
    device = torch.device(settings.device)
    budget = parse_bytes(settings.worker_memory_budget) if settings.worker_memory_budget else default_budget(device)
    cap = 1 if settings.worker_batching == "off" else settings.worker_max_batch
    memory = MemoryModel(budget=budget, operator_cap=cap)
    if not settings.worker_profile_memory:
        return memory
    for name, pipeline in pipelines.items():
        v = variants[name]
        # Autoregressive models ignore `steps`: a profile run would be a whole generation. Their
        # batches stay within the operator cap (and the OOM fallback).
        if "text-to-image" not in v.tasks or v.family != "flux":
            continue

        def run(batch: int, v: Variant = v, pipeline: Pipeline = pipeline) -> None:
            pipeline.generate([ImageRequest("profile", seed, v.default_width, v.default_height, 1,
                                            v.default_guidance) for seed in range(batch)])

        fit = memory.profile(name, v.default_width * v.default_height, run, device)
        key = (name, "text-to-image", v.default_width, v.default_height, 0)
        log.info("%s: %.1f MiB + %.1f MiB per %dx%d image; batch cap %d (budget %.0f MiB)", name,
                 fit.base / 2**20, fit.per_image / 2**20, v.default_width, v.default_height, memory.cap(key),
                 budget / 2**20)
    return memory


def run_worker(settings: WorkerSettings) -> None:
    catalog = load_catalog(settings.catalog)
    names = settings.variant_names() or list(catalog.variants)
    unknown = [n for n in names if catalog.get(n) is None]
    if unknown:
        raise SystemExit(f"variants not in catalog {settings.catalog}: {', '.join(unknown)}")
    pipelines: dict[str, Pipeline] = {}
    for name in names:
        variant = catalog.variants[name]
        pipelines[name] = load_pipeline(
            variant.family, variant.preset, catalog.checkpoint_paths(variant), device=settings.device
        )
        log.info("loaded %s (%s %s) on %s", name, variant.family, variant.preset, settings.device)
    memory = build_memory_model(settings, pipelines, catalog.variants)
    worker = Worker(settings, pipelines, memory)

    def _stop(signum: int, _frame: object) -> None:
        # Finish the batch in hand, then exit; unacked work stays pending for the next worker.
        log.info("signal %d: stopping after the current batch", signum)
        worker.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker.run()
