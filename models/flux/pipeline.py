"""The FLUX pipeline the worker calls: a batch of requests (one batch key) -> images.

Each request keeps its own prompt, seed, steps and guidance. Prompts are encoded once per call
(duplicates once), noise comes from a CPU generator per request, and the transformer runs on the
whole batch with per-sample timesteps and guidance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from models.flux import sampling
from models.flux.autoencoder import AutoEncoder, AutoEncoder2, build_autoencoder
from models.flux.model import Flux
from models.flux.model2 import Flux2
from models.flux.presets import FluxPreset, build_transformer, get_preset
from models.interface import ImageRequest, StepCallback
from models.text.base import TextEmbeddings, TextEncoder
from models.text.demo import DemoTextEncoder

DEMO_SEED = 20240801  # fixed seed for the interim random demo weights


def image_to_tensor(image: Image.Image, width: int, height: int) -> Tensor:
    """PIL -> (1, 3, H, W) in [-1, 1], resized to the target size."""
    img = image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32).copy())  # (H, W, 3)
    return (arr.permute(2, 0, 1) / 127.5 - 1.0).unsqueeze(0)


def mask_to_tensor(mask: Image.Image, width: int, height: int) -> Tensor:
    """PIL mask -> (1, 1, H, W) in {0, 1}; white (1) means repaint."""
    m = mask.convert("L").resize((width, height), Image.Resampling.NEAREST)
    return (torch.from_numpy(np.asarray(m, dtype=np.float32).copy()) / 255.0).round()[None, None]


def tensor_to_images(x: Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> PIL RGB images."""
    arr = ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


class FluxPipeline:
    def __init__(
        self,
        preset: FluxPreset,
        transformer: Flux | Flux2,
        autoencoder: AutoEncoder | AutoEncoder2,
        text_encoder: TextEncoder,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        self.preset = preset
        self.transformer = transformer.eval()
        self.autoencoder = autoencoder.eval()
        self.text_encoder = text_encoder
        self.device = torch.device(device)
        self.dtype = dtype
        self.flux2 = isinstance(transformer, Flux2)
        # Pixels per token: the AE's downsampling times the 2x2 pack (FLUX.2 packs inside the AE).
        self.token_px = 2 * autoencoder.params.downsample

    # ------------------------------------------------------------ helpers

    def _encode_prompts(self, prompts: Sequence[str]) -> tuple[TextEmbeddings, Tensor]:
        """Encode each distinct prompt once; returns the embeddings and a row -> embedding index."""
        unique = list(dict.fromkeys(prompts))
        emb = self.text_encoder.encode(unique)
        index = torch.tensor([unique.index(p) for p in prompts], device=self.device)
        tok = emb.tokens.to(self.device, self.dtype)
        pooled = emb.pooled.to(self.device, self.dtype) if emb.pooled is not None else None
        return TextEmbeddings(tok, pooled), index

    def _encode_image(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> tokens (B, L, C) the transformer consumes."""
        z = self.autoencoder.encode(x.to(self.device, self.dtype))
        return sampling.tokens(z) if self.flux2 else sampling.pack(z)

    # ------------------------------------------------------------ the contract

    def generate(
        self, requests: Sequence[ImageRequest], on_step: StepCallback | None = None
    ) -> list[Image.Image | None]:
        """One image per request (None for requests on_step stopped). All requests share width,
        height and task; each keeps its own prompt, seed, steps and guidance. on_step(step, total)
        runs after every denoising step, with total = the largest step count in the batch (a
        request with fewer steps finishes early and leaves the batch)."""
        pixels = self.generate_pixels(requests, on_step)
        alive = [i for i, p in enumerate(pixels) if p is not None]
        results: list[Image.Image | None] = [None] * len(pixels)
        if alive:
            images = tensor_to_images(torch.stack([pixels[i] for i in alive]))  # type: ignore[misc]
            for i, img in zip(alive, images, strict=True):
                results[i] = img
        return results

    @torch.inference_mode()
    def generate_pixels(
        self, requests: Sequence[ImageRequest], on_step: StepCallback | None = None
    ) -> list[Tensor | None]:
        """Like generate, but returns each image as a (3, H, W) float tensor in [-1, 1] (unclamped)."""
        if not requests:
            return []
        first = requests[0]
        for r in requests:
            if (r.width, r.height, r.task) != (first.width, first.height, first.task):
                raise ValueError("all requests in one generate() call must share width, height and task")
            if r.steps < 1:
                raise ValueError(f"steps must be >= 1, got {r.steps}")
        px = self.token_px
        width, height = px * max(1, first.width // px), px * max(1, first.height // px)
        h, w = height // px, width // px  # token grid
        n = len(requests)
        n_axes = 4 if self.flux2 else 3

        text, rows_text = self._encode_prompts([r.prompt for r in requests])
        txt_ids = sampling.text_ids(text.tokens.shape[1], n_axes, self.device)
        img_ids = sampling.image_ids(h, w, n_axes, device=self.device)

        # Noise in fp32 from each request's seed; FLUX.1 draws it on the 2x2-unpacked latent grid.
        if self.flux2:
            noise = sampling.make_noise([r.seed for r in requests], (self.autoencoder.latent_channels, h, w))
            x = sampling.tokens(noise)
        else:
            z = self.autoencoder.params.z_channels
            x = sampling.pack(sampling.make_noise([r.seed for r in requests], (z, 2 * h, 2 * w)))
        x = x.to(self.device).contiguous()

        channel_cond, seq_cond, seq_ids = self._conditioning(requests, width, height)

        uncond: tuple[TextEmbeddings, Tensor] | None = None
        if not self.preset.distilled:
            uncond = self._encode_prompts([""] * n)

        def run(rows: Tensor, xs: Tensor, t: Tensor, g: Tensor, emb: tuple[TextEmbeddings, Tensor]) -> Tensor:
            te, ti = emb
            full = rows.shape[0] == n
            sel = ti if full else ti[rows]
            txt = te.tokens[sel]
            img = xs.to(self.dtype)
            if channel_cond is not None:
                img = torch.cat((img, channel_cond if full else channel_cond[rows]), dim=-1)
            ids = img_ids
            if seq_cond is not None:
                img = torch.cat((img, seq_cond if full else seq_cond[rows]), dim=1)
                ids = torch.cat((img_ids, seq_ids), dim=1)
            guidance = g.to(self.dtype) if self.preset.transformer.guidance_embed else None
            if self.flux2:
                out = self.transformer(img, ids, txt, txt_ids, t.to(self.dtype), guidance)
            else:
                y = te.pooled[sel]
                out = self.transformer(img, ids, txt, txt_ids, t.to(self.dtype), y, guidance)
            return out[:, : xs.shape[1]].float()  # drop reference tokens

        def predict(rows: Tensor, xs: Tensor, t: Tensor, g: Tensor) -> Tensor:
            return run(rows, xs, t, g, (text, rows_text))

        if uncond is not None:
            u = uncond

            def predict_u(rows: Tensor, xs: Tensor, t: Tensor, g: Tensor) -> Tensor:
                return run(rows, xs, t, g, u)

            predict = sampling.cfg_predict(predict, predict_u)  # type: ignore[assignment]

        schedules = [sampling.get_schedule(r.steps, h * w, self.preset.schedule) for r in requests]
        x, alive = sampling.denoise(predict, x, schedules, [r.guidance for r in requests], on_step)

        keep = [i for i in range(n) if alive[i]]
        results: list[Tensor | None] = [None] * n
        if not keep:
            return results
        xk = x[keep] if len(keep) < n else x
        z = sampling.untokens(xk, h, w) if self.flux2 else sampling.unpack(xk, h, w)
        decoded = self.autoencoder.decode(z.to(self.dtype)).float()  # (b, 3, H, W)
        for i, img in zip(keep, decoded, strict=True):
            results[i] = img
        return results

    def _conditioning(
        self, requests: Sequence[ImageRequest], width: int, height: int
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """(channel conditioning (B, L, C'), sequence conditioning (B, L', C), its ids (1, L', axes))."""
        task = self.preset.task
        if task == "fill":
            imgs, masks = [], []
            for r in requests:
                if not r.images or r.mask is None:
                    raise ValueError("the fill task needs an image and a mask")
                imgs.append(image_to_tensor(r.images[0], width, height))
                masks.append(mask_to_tensor(r.mask, width, height))
            img, mask = torch.cat(imgs).to(self.device, self.dtype), torch.cat(masks).to(self.device, self.dtype)
            latents = self.autoencoder.encode(img * (1 - mask))
            return sampling.fill_condition(latents, mask, self.autoencoder.params.downsample), None, None
        n_refs = len(requests[0].images)
        if task in ("kontext", "reference") or (self.flux2 and n_refs):
            if any(len(r.images) != n_refs for r in requests):
                raise ValueError("all requests in one batch must have the same number of reference images")
            if n_refs == 0:
                return None, None, None
            n_axes = 4 if self.flux2 else 3
            px = self.token_px
            seqs, ids = [], []
            for k in range(n_refs):
                refs = torch.cat([image_to_tensor(r.images[k], width, height) for r in requests])
                seqs.append(self._encode_image(refs))
                t_off = 10.0 * (k + 1) if self.flux2 else 1.0  # Kontext t=1; FLUX.2 refs 10, 20, ...
                ids.append(sampling.image_ids(height // px, width // px, n_axes, t_off, self.device))
            return None, torch.cat(seqs, dim=1), torch.cat(ids, dim=1)
        return None, None, None


# ---------------------------------------------------------------- factory


def _seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a module with default init from a fixed seed, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def load_flux_pipeline(
    preset: str | FluxPreset,
    checkpoints: Mapping[str, str],
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> FluxPipeline:
    """Load a FLUX preset. checkpoints: "transformer", "autoencoder", "text_encoder" -> file or folder.

    Demo presets build any missing part with deterministic random weights (fixed seed), an interim
    until trained demo weights ship. Full-size presets need all three. `preset` may also be a
    FluxPreset object (e.g. a variant of a demo preset being trained).
    """
    from models.flux.checkpoint import load_autoencoder, load_transformer

    p = get_preset(preset) if isinstance(preset, str) else preset
    missing = [k for k in ("transformer", "autoencoder", "text_encoder") if not checkpoints.get(k)]
    if missing and not p.demo:
        raise ValueError(f"preset {p.name!r} needs checkpoint paths for: {', '.join(missing)}")

    if checkpoints.get("transformer"):
        transformer = load_transformer(checkpoints["transformer"], p, device=device, dtype=dtype)
    else:
        transformer = _seeded(lambda: build_transformer(p.transformer, "cpu"), DEMO_SEED)
        transformer = transformer.to(device=device, dtype=dtype)  # type: ignore[assignment]
    if checkpoints.get("autoencoder"):
        ae = load_autoencoder(checkpoints["autoencoder"], p.autoencoder, device=device, dtype=dtype)
    else:
        ae = _seeded(lambda: build_autoencoder(p.autoencoder), DEMO_SEED + 1).to(device=device, dtype=dtype)
    text = _load_text_encoder(p, checkpoints.get("text_encoder"), device, dtype)
    pipe = FluxPipeline(p, transformer, ae, text, device=device, dtype=dtype)  # type: ignore[arg-type]
    if transformer.params.in_channels != _expected_in_channels(pipe):
        raise ValueError(f"transformer in_channels {transformer.params.in_channels} do not fit preset {p.name!r}")
    return pipe


def _expected_in_channels(pipe: FluxPipeline) -> int:
    c = pipe.autoencoder.latent_channels if pipe.flux2 else 4 * pipe.autoencoder.params.z_channels
    if pipe.preset.task == "fill":
        f = pipe.autoencoder.params.downsample
        c = 2 * c + 4 * f * f
    return c


def _load_text_encoder(p: FluxPreset, path: str | None, device: str, dtype: torch.dtype) -> TextEncoder:
    spec = p.text
    if spec.kind == "demo":
        assert spec.demo is not None
        if path:
            return DemoTextEncoder.from_file(_single_file(path), spec.demo, device=device, dtype=dtype)
        enc = _seeded(lambda: DemoTextEncoder(spec.demo), DEMO_SEED + 2).to(device=device, dtype=dtype)
        return enc.eval()  # type: ignore[return-value]
    if path is None:
        raise ValueError(f"preset {p.name!r} needs a text_encoder folder")
    from models.text.hf import load_text_encoder

    return load_text_encoder(spec.kind, path, max_length=spec.max_length, layers=spec.layers, device=device,
                             dtype=dtype)


def _single_file(path: str) -> str:
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.safetensors"))
        if len(files) != 1:
            raise ValueError(f"expected one .safetensors file in {path}, found {len(files)}")
        return str(files[0])
    return str(p)


__all__ = ["FluxPipeline", "load_flux_pipeline"]
