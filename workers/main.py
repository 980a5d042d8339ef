"""Start a worker: load the catalog's pipelines onto the device, measure their memory, then run the
loop until SIGTERM."""

from __future__ import annotations

import logging
import signal

import torch

from models.interface import ImageRequest, Pipeline
from models.loading import load_pipeline
from store.catalog import Catalog, Variant, load_catalog
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
    measured: dict[tuple, str] = {}  # (pipeline, default size) -> the variant measured for it
    for name, pipeline in pipelines.items():
        v = variants[name]
        same = (id(pipeline), v.default_width, v.default_height)
        if same in measured:  # a variant sharing loaded weights (and size): the same memory
            memory.fits[name] = memory.fits[measured[same]]
            continue
        # Autoregressive models ignore `steps`: a profile run would be a whole generation. Their
        # batches stay within the operator cap (and the OOM fallback).
        if "text-to-image" not in v.tasks or v.family != "flux":
            continue

        def run(batch: int, v: Variant = v, pipeline: Pipeline = pipeline) -> None:
            pipeline.generate([ImageRequest("profile", seed, v.default_width, v.default_height, 1,
                                            v.default_guidance) for seed in range(batch)])

        fit = memory.profile(name, v.default_width * v.default_height, run, device)
        measured[same] = name
        key = (name, "text-to-image", v.default_width, v.default_height, 0)
        log.info("%s: %.1f MiB + %.1f MiB per %dx%d image; batch cap %d (budget %.0f MiB)", name,
                 fit.base / 2**20, fit.per_image / 2**20, v.default_width, v.default_height, memory.cap(key),
                 budget / 2**20)
    return memory


def load_pipelines(catalog: Catalog, names: list[str], device: str) -> dict[str, Pipeline]:
    """Each variant's pipeline. Variants that differ only in defaults, limits and price (the demo's
    flex/pro/max on klein's weights) share one loaded pipeline: their weights are in memory once."""
    pipelines: dict[str, Pipeline] = {}
    loaded: dict[tuple, Pipeline] = {}
    for name in names:
        variant = catalog.variants[name]
        paths = catalog.checkpoint_paths(variant)
        same = (variant.family, variant.preset, tuple(sorted(paths.items())))
        if same not in loaded:
            loaded[same] = load_pipeline(variant.family, variant.preset, paths, device=device)
        pipelines[name] = loaded[same]
        log.info("loaded %s (%s %s) on %s", name, variant.family, variant.preset, device)
    return pipelines


def run_worker(settings: WorkerSettings) -> None:
    catalog = load_catalog(settings.catalog)
    names = settings.variant_names() or list(catalog.variants)
    unknown = [n for n in names if catalog.get(n) is None]
    if unknown:
        raise SystemExit(f"variants not in catalog {settings.catalog}: {', '.join(unknown)}")
    pipelines = load_pipelines(catalog, names, settings.device)
    memory = build_memory_model(settings, pipelines, catalog.variants)
    worker = Worker(settings, pipelines, memory)

    def _stop(signum: int, _frame: object) -> None:
        # Finish the batch in hand, then exit; unacked work stays pending for the next worker.
        log.info("signal %d: stopping after the current batch", signum)
        worker.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker.run()
