"""`fluxgate jobs`: the caller's recent jobs; `fluxgate jobs ID` one job; `fluxgate jobs ID --cancel`."""

from __future__ import annotations

import argparse
import json
import sys
import time

from cli.generate import add_connection_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", nargs="?", help="show this job (default: list recent jobs)")
    parser.add_argument("--cancel", action="store_true", help="cancel the job given")
    parser.add_argument("--limit", type=int, default=20, help="jobs to list (default 20, at most 100)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    add_connection_arguments(parser)


def _row(job: dict) -> str:
    age = time.time() - job["timings"]["created_at"]
    progress = f"{job['progress']['step']}/{job['progress']['total']}"
    prompt = job["prompt"] if len(job["prompt"]) <= 40 else job["prompt"][:37] + "..."
    return (f"{job['id']}  {job['status']:<9}  {job['model']:<12}  {job['width']}x{job['height']:<5}  "
            f"{progress:>5}  {age:7.0f}s ago  {prompt}")


def run(args: argparse.Namespace) -> int:
    from client import Client, FluxgateError

    if args.cancel and not args.job_id:
        print("fluxgate jobs: --cancel needs a job id", file=sys.stderr)
        return 2
    try:
        with Client(args.url, args.key) as fg:
            if args.job_id:
                job = fg.cancel(args.job_id) if args.cancel else fg.job(args.job_id)
                print(json.dumps(job, indent=2) if args.json or not args.cancel else _row(job))
                return 0
            jobs = fg.jobs(args.limit)
    except (FluxgateError, ValueError) as err:
        print(f"fluxgate jobs: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(jobs, indent=2))
    elif not jobs:
        print("no recent jobs (failed and canceled jobs are only shown by id)")
    for job in [] if args.json else jobs:
        print(_row(job))
    return 0
