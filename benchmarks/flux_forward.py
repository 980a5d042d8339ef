"""Forward time of our FLUX.1 transformer vs diffusers' FluxTransformer2DModel, same weights.

Config: hidden 256 (2 heads x 128), 4 double + 8 single blocks, 1024 image tokens (32x32),
128 text tokens, batch 1, fp32 on CPU by default. Runs alternate between the two models so that
both see the same machine state; prints the median of each, the ratio, and the peak memory a
forward adds on top of the weights (measured in a fresh subprocess per model, from ru_maxrss on
CPU or max_memory_allocated on CUDA).

    python benchmarks/flux_forward.py [--runs 15] [--device cpu] [--dtype float32]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import multiprocessing as mp
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.flux.convert import transformer_bfl_to_diffusers  # noqa: E402
from models.flux.model import Flux, FluxParams  # noqa: E402

PARAMS = FluxParams(hidden_size=256, num_heads=2, depth=4, depth_single_blocks=8, axes_dim=(16, 56, 56))
GRID, TXT = 32, 128


def build(which: str, device: str, dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    ours = Flux(PARAMS).eval()
    if which == "ours":
        return ours.to(device, dtype)
    from diffusers import FluxTransformer2DModel

    ref = FluxTransformer2DModel(in_channels=64, num_layers=PARAMS.depth, num_single_layers=PARAMS.depth_single_blocks,
                                 attention_head_dim=128, num_attention_heads=PARAMS.num_heads,
                                 joint_attention_dim=PARAMS.context_in_dim, pooled_projection_dim=PARAMS.vec_in_dim,
                                 guidance_embeds=True, axes_dims_rope=PARAMS.axes_dim).eval()
    ref.load_state_dict(transformer_bfl_to_diffusers(ours.state_dict(), "flux1"), strict=True)
    return ref.to(device, dtype)


def inputs(device: str, dtype: torch.dtype, batch: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.zeros(GRID, GRID, 3)
    ids[..., 1] = torch.arange(GRID)[:, None]
    ids[..., 2] = torch.arange(GRID)[None, :]
    return {
        "img": torch.randn(batch, GRID * GRID, 64, generator=g).to(device, dtype),
        "txt": torch.randn(batch, TXT, PARAMS.context_in_dim, generator=g).to(device, dtype),
        "y": torch.randn(batch, PARAMS.vec_in_dim, generator=g).to(device, dtype),
        "img_ids": ids.reshape(-1, 3).to(device),
        "txt_ids": torch.zeros(TXT, 3, device=device),
        "t": torch.full((batch,), 0.7, device=device, dtype=dtype),
        "guidance": torch.full((batch,), 3.5, device=device, dtype=dtype),
    }


def forward(which: str, model: torch.nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
    if which == "ours":
        return model(x["img"], x["img_ids"][None], x["txt"], x["txt_ids"][None], x["t"], x["y"], x["guidance"])
    return model(hidden_states=x["img"], encoder_hidden_states=x["txt"], pooled_projections=x["y"], timestep=x["t"],
                 img_ids=x["img_ids"], txt_ids=x["txt_ids"], guidance=x["guidance"], return_dict=False)[0]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> int:
    """Reset the kernel's high-water mark to the current RSS (Linux clear_refs 5); return RSS bytes.
    Elsewhere fall back to ru_maxrss, which only measures a forward that exceeds earlier peaks."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmRSS") * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_rss() -> int:
    try:
        return _status_kib("VmHWM") * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_memory(which: str, device: str, dtype_name: str, threads: int, queue: mp.Queue) -> None:
    """In a fresh process: extra memory at the peak of one forward, over the loaded model."""
    if threads:
        torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    model = build(which, device, dtype)
    x = inputs(device, dtype)
    with torch.inference_mode():
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            forward(which, model, x)
            _sync(device)
            queue.put(torch.cuda.max_memory_allocated() - base)
        else:
            forward(which, model, x)  # warm-up: kernel caches and one-time allocations
            gc.collect()
            _malloc_trim()  # hand freed activations back to the OS so the next peak is visible
            base = _reset_peak_rss()
            forward(which, model, x)
            queue.put(_peak_rss() - base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    models = {w: build(w, args.device, dtype) for w in ("ours", "diffusers")}
    x = inputs(args.device, dtype)
    times: dict[str, list[float]] = {w: [] for w in models}
    with torch.inference_mode():
        out = {w: forward(w, m, x) for w, m in models.items()}  # warm-up
        diff = (out["ours"].float() - out["diffusers"].float()).abs().max().item()
        for _ in range(args.runs):
            for w, m in models.items():
                _sync(args.device)
                t0 = time.perf_counter()
                forward(w, m, x)
                _sync(args.device)
                times[w].append(time.perf_counter() - t0)
    ctx = mp.get_context("spawn")
    mem = {}
    for w in models:
        q: mp.Queue = ctx.Queue()
        p = ctx.Process(target=peak_memory, args=(w, args.device, args.dtype, args.threads, q))
        p.start()
        mem[w] = q.get()
        p.join()
    med = {w: statistics.median(t) for w, t in times.items()}
    n_params = sum(p.numel() for p in models["ours"].parameters())
    print(f"config: hidden {PARAMS.hidden_size}, {PARAMS.depth} double + {PARAMS.depth_single_blocks} single blocks, "
          f"{GRID * GRID} image + {TXT} text tokens, batch 1, {args.dtype} on {args.device}, "
          f"{torch.get_num_threads()} threads, {n_params / 1e6:.1f}M params, {args.runs} runs each")
    print(f"max |ours - diffusers| = {diff:.2e}")
    for w in models:
        print(f"{w:>10}: median {med[w] * 1000:8.1f} ms  (min {min(times[w]) * 1000:.1f})  "
              f"peak forward memory {mem[w] / 2**20:8.1f} MiB")
    print(f"ratio ours/diffusers: {med['ours'] / med['diffusers']:.3f}x time, "
          f"{mem['ours'] / max(mem['diffusers'], 1):.3f}x peak memory")


if __name__ == "__main__":
    main()
