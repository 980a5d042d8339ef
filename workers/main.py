"""Start a worker: load the catalog's pipelines onto the device, then run the loop until SIGTERM."""

from __future__ import annotations

import logging
import signal

from models.loading import load_pipeline
from store.catalog import load_catalog
from workers.settings import WorkerSettings
from workers.worker import Worker

log = logging.getLogger("fluxgate.worker")


def run_worker(settings: WorkerSettings) -> None:
    catalog = load_catalog(settings.catalog)
    names = settings.variant_names() or list(catalog.variants)
    unknown = [n for n in names if catalog.get(n) is None]
    if unknown:
        raise SystemExit(f"variants not in catalog {settings.catalog}: {', '.join(unknown)}")
    pipelines = {}
    for name in names:
        variant = catalog.variants[name]
        pipelines[name] = load_pipeline(
            variant.family, variant.preset, catalog.checkpoint_paths(variant), device=settings.device
        )
        log.info("loaded %s (%s %s) on %s", name, variant.family, variant.preset, settings.device)
    worker = Worker(settings, pipelines)

    def _stop(signum: int, _frame: object) -> None:
        # Finish the batch in hand, then exit; unacked work stays pending for the next worker.
        log.info("signal %d: stopping after the current batch", signum)
        worker.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker.run()
