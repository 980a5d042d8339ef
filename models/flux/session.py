"""Step-level batching for distilled text-to-image FLUX models.

A `DenoiseSession` is a running batch at one resolution. Every `step()` is one transformer forward
over all rows, each row at its own point of its own schedule (timestep and guidance are per
sample), so a request that arrives while others are half done joins at the next step instead of
waiting for the whole batch: the GPU stays full and short jobs do not queue behind long ones.

A row's result equals what `FluxPipeline.generate` gives for the same request alone: the same
per-request CPU noise, the same schedule, the same Euler updates (up to float rounding of batched
matrix products).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

from models.flux import sampling
from models.flux.pipeline import FluxPipeline, tensor_to_images
from models.interface import ImageRequest


@dataclass
class _Row:
    handle: int
    schedule: list[float]
    guidance: float
    index: int = 0  # steps done

    @property
    def total(self) -> int:
        return len(self.schedule) - 1


def supports_sessions(pipe: object) -> bool:
    """Step-level batching needs a distilled (single pass per step) text-to-image FLUX pipeline."""
    return (isinstance(pipe, FluxPipeline) and pipe.preset.distilled and pipe.preset.task == "text-to-image")


class DenoiseSession:
    def __init__(self, pipe: FluxPipeline, width: int, height: int) -> None:
        if not supports_sessions(pipe):
            raise ValueError(f"{pipe.preset.name} cannot batch per step (needs CFG or conditioning)")
        self.pipe = pipe
        px = pipe.token_px
        self.width, self.height = px * max(1, width // px), px * max(1, height // px)
        self.h, self.w = self.height // px, self.width // px
        self.n_axes = 4 if pipe.flux2 else 3
        self.img_ids = sampling.image_ids(self.h, self.w, self.n_axes, device=pipe.device)
        self.txt_ids: Tensor | None = None
        self.rows: list[_Row] = []
        self.x: Tensor | None = None  # (B, L, C) latent tokens, fp32
        self.txt: Tensor | None = None  # (B, Lt, D)
        self.pooled: Tensor | None = None  # (B, V), FLUX.1 only
        self._next_handle = 0

    def __len__(self) -> int:
        return len(self.rows)

    @torch.inference_mode()
    def add(self, requests: Sequence[ImageRequest]) -> list[int]:
        """Join the batch; returns a handle per request (results come back from step())."""
        if not requests:
            return []
        pipe = self.pipe
        text, index = pipe._encode_prompts([r.prompt for r in requests])
        tokens = text.tokens[index]
        pooled = text.pooled[index] if text.pooled is not None else None
        if pipe.flux2:
            x = sampling.tokens(sampling.make_noise([r.seed for r in requests],
                                                    (pipe.autoencoder.latent_channels, self.h, self.w)))
        else:
            z = pipe.autoencoder.params.z_channels
            x = sampling.pack(sampling.make_noise([r.seed for r in requests], (z, 2 * self.h, 2 * self.w)))
        x = x.to(pipe.device)
        if self.txt_ids is None:
            self.txt_ids = sampling.text_ids(tokens.shape[1], self.n_axes, pipe.device)
        self.x = x if self.x is None else torch.cat((self.x, x))
        self.txt = tokens if self.txt is None else torch.cat((self.txt, tokens))
        if pooled is not None:
            self.pooled = pooled if self.pooled is None else torch.cat((self.pooled, pooled))
        handles = []
        for r in requests:
            schedule = sampling.get_schedule(r.steps, self.h * self.w, pipe.preset.schedule)
            self.rows.append(_Row(self._next_handle, schedule, r.guidance))
            handles.append(self._next_handle)
            self._next_handle += 1
        return handles

    def progress(self) -> dict[int, tuple[int, int]]:
        return {row.handle: (row.index, row.total) for row in self.rows}

    def drop(self, handles: Iterable[int]) -> None:
        gone = set(handles)
        self._keep([i for i, row in enumerate(self.rows) if row.handle not in gone])

    @torch.inference_mode()
    def step(self) -> list[tuple[int, Image.Image]]:
        """One forward pass for every row; returns (handle, image) for the rows that finished."""
        if not self.rows:
            return []
        assert self.x is not None and self.txt is not None and self.txt_ids is not None
        pipe = self.pipe
        device = pipe.device
        t_cur = torch.tensor([row.schedule[row.index] for row in self.rows], dtype=torch.float32, device=device)
        t_next = torch.tensor([row.schedule[row.index + 1] for row in self.rows], dtype=torch.float32, device=device)
        guidance = None
        if pipe.preset.transformer.guidance_embed:
            guidance = torch.tensor([row.guidance for row in self.rows], dtype=pipe.dtype, device=device)
        img = self.x.to(pipe.dtype)
        if pipe.flux2:
            v = pipe.transformer(img, self.img_ids, self.txt, self.txt_ids, t_cur.to(pipe.dtype), guidance)
        else:
            v = pipe.transformer(img, self.img_ids, self.txt, self.txt_ids, t_cur.to(pipe.dtype), self.pooled,
                                 guidance)
        self.x.add_((t_next - t_cur)[:, None, None] * v.float())
        for row in self.rows:
            row.index += 1
        done = [i for i, row in enumerate(self.rows) if row.index >= row.total]
        if not done:
            return []
        finished = self.x[done]
        z = (sampling.untokens(finished, self.h, self.w) if pipe.flux2
             else sampling.unpack(finished, self.h, self.w))
        images = tensor_to_images(pipe.autoencoder.decode(z.to(pipe.dtype)).float())
        results = [(self.rows[i].handle, image) for i, image in zip(done, images, strict=True)]
        self._keep([i for i in range(len(self.rows)) if i not in set(done)])
        return results

    def _keep(self, keep: list[int]) -> None:
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.x = self.txt = self.pooled = None
            return
        index = torch.tensor(keep, device=self.pipe.device)
        assert self.x is not None and self.txt is not None
        self.x, self.txt = self.x[index], self.txt[index]
        if self.pooled is not None:
            self.pooled = self.pooled[index]
