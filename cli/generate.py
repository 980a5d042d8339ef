"""`fluxgate generate "prompt" --model schnell -o out.png`: one image through a running server, with a live
progress bar fed by the job's Server-Sent Events."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="server URL (default: FLUXGATE_URL or http://127.0.0.1:8000)")
    parser.add_argument("--key", help="API key (default: FLUXGATE_KEY)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt")
    parser.add_argument("--model", "-m", default="schnell", help="variant (see GET /v1/models; default schnell)")
    parser.add_argument("--output", "-o", default="out.png",
                        help="image file; with -n > 1, name-2.png, name-3.png, ... follow (default out.png)")
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--guidance", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("-n", type=int, default=1, help="images (1-4), seeds seed, seed+1, ...")
    parser.add_argument("--format", choices=["png", "jpeg", "webp"], help="default: from the -o extension")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_connection_arguments(parser)


class ProgressBar:
    """One line on stderr, redrawn in place on a terminal; on a pipe, one line per change of state."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.stream, self.width = stream, width
        self.tty = stream.isatty()
        self._last = ""

    def show(self, step: int, total: int, label: str) -> None:
        filled = int(self.width * step / total) if total else 0
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {step}/{total} {label}"
        if line == self._last:
            return
        self._last = line
        self.stream.write(f"\r{line}\033[K" if self.tty else f"{line}\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def output_paths(output: str, n: int) -> list[Path]:
    path = Path(output)
    return [path] + [path.with_name(f"{path.stem}-{i + 1}{path.suffix}") for i in range(1, n)]


def run(args: argparse.Namespace) -> int:
    from client import Client, Event, FluxgateError, JobFailed

    output_format = args.format or FORMATS.get(Path(args.output).suffix.lower(), "png")
    try:
        fg = Client(args.url, args.key)
    except ValueError as err:
        print(f"fluxgate generate: {err}", file=sys.stderr)
        return 2
    bar = ProgressBar()
    with fg:
        try:
            submitted = fg.submit(args.model, args.prompt, width=args.width, height=args.height, steps=args.steps,
                                  guidance=args.guidance, seed=args.seed, n=args.n, output_format=output_format)
            total = 0

            def on_event(event: Event) -> None:
                nonlocal total
                if args.quiet:
                    return
                if event.event == "progress":
                    total = event.data.get("total", total)
                    bar.show(event.data.get("step", 0), total, "running")
                elif event.event in ("queued", "running"):
                    bar.show(0, total, f"{event.event} (queue position {submitted['queue_position']})"
                             if event.event == "queued" else "running")

            job = fg.wait(submitted["id"], on_event)
            if not args.quiet:
                bar.show(job["progress"]["step"], job["progress"]["total"], job["status"])
                bar.done()
            if job["status"] != "succeeded":
                raise JobFailed(job)
            for path, image in zip(output_paths(args.output, len(job["images"])), job["images"], strict=True):
                path.write_bytes(fg.image(image["url"]))
                print(f"{path}  {image['width']}x{image['height']}  seed {image['seed']}")
            seconds = job["timings"]["finished_at"] - job["timings"]["created_at"]
            print(f"job {job['id']}  {job['model']}  {seconds:.2f} s  cost {job['cost']} milli-credits",
                  file=sys.stderr)
            return 0
        except FluxgateError as err:
            print(f"fluxgate generate: {err}", file=sys.stderr)
            return 1
        except JobFailed as err:
            print(f"fluxgate generate: {err}", file=sys.stderr)
            return 1
