"""The one small interface every text encoder implements for the FLUX pipelines."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor


@dataclass
class TextEmbeddings:
    """Per-token features (B, L, context_dim) and, for FLUX.1, a pooled vector (B, vec_dim)."""

    tokens: Tensor
    pooled: Tensor | None = None


class TextEncoder(Protocol):
    def encode(self, prompts: Sequence[str]) -> TextEmbeddings:
        """Encode a batch of prompts; row i depends on prompts[i] only (fixed-length padding)."""
        ...
