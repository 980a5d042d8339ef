"""The variant catalog: which models an installation serves, their defaults, limits and prices.

It lives in `store/` because both sides read it without torch: the gateway validates and prices
requests with it, the worker builds pipelines from it. A catalog is a TOML file; two ship here
(`demo`, the default, and `real`), and an operator can point `--catalog` at their own.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CATALOG_DIR = Path(__file__).with_name("catalogs")
BUILTIN_CATALOGS = {"demo": CATALOG_DIR / "demo.toml", "real": CATALOG_DIR / "real.toml"}


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    family: Literal["flux", "cogview"]
    preset: str = Field(description="architecture preset in models/ (e.g. flux1-dev, demo-flux1-schnell)")
    description: str = ""
    # Checkpoint paths by part ("transformer", "autoencoder", "text_encoder", "vqvae", ...),
    # relative to the catalog file. Empty for demo presets without trained weights yet.
    checkpoints: dict[str, str] = Field(default_factory=dict)
    tasks: tuple[str, ...] = ("text-to-image",)

    default_steps: int
    min_steps: int = 1
    max_steps: int
    default_guidance: float
    min_guidance: float = 0.0
    max_guidance: float = 10.0
    default_width: int
    default_height: int
    min_size: int = 16
    max_size: int
    max_pixels: int
    size_multiple: int = 16
    # A model with a fixed token grid (the demo CogView: 8x8 codes) draws only these sides; empty:
    # any size within the limits. The image tasks (upscale: 2x the input) are not bound by it.
    native_sizes: tuple[int, ...] = ()

    # Integer milli-credits: the first megapixel (or part of it), then each further megapixel.
    price_first_mp: int = 1000
    price_extra_mp: int = 1000
    tiers: tuple[str, ...] = ("free", "paid", "internal")
    # Queue-depth cap: beyond this many queued jobs, submits get 503 + Retry-After (0 = unlimited).
    max_queued: int = 1000

    @model_validator(mode="after")
    def _check_ranges(self) -> Variant:
        if not self.min_steps <= self.default_steps <= self.max_steps:
            raise ValueError(f"{self.name}: default_steps outside [min_steps, max_steps]")
        if not self.min_guidance <= self.default_guidance <= self.max_guidance:
            raise ValueError(f"{self.name}: default_guidance outside [min_guidance, max_guidance]")
        for side in (self.default_width, self.default_height):
            if side % self.size_multiple or not self.min_size <= side <= self.max_size:
                raise ValueError(f"{self.name}: default size must be a multiple of {self.size_multiple}")
        return self

    def cost(self, width: int, height: int, images: int) -> int:
        """Milli-credits for `images` images of this size: first megapixel, then per megapixel above."""
        megapixels = width * height / 1_000_000
        extra = max(0.0, megapixels - 1.0)
        per_image = self.price_first_mp + round(self.price_extra_mp * extra)
        return per_image * images


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    variants: dict[str, Variant]

    def get(self, name: str) -> Variant | None:
        return self.variants.get(name)

    def checkpoint_paths(self, variant: Variant) -> dict[str, str]:
        """Checkpoint paths made absolute against the catalog file's folder."""
        base = self.path.parent
        return {part: str((base / p).resolve()) for part, p in variant.checkpoints.items()}


def load_catalog(name_or_path: str | Path = "demo") -> Catalog:
    path = BUILTIN_CATALOGS.get(str(name_or_path), Path(name_or_path))
    if not path.is_file():
        known = ", ".join(BUILTIN_CATALOGS)
        raise FileNotFoundError(f"catalog {name_or_path!r} not found (built in: {known}, or a TOML file path)")
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    variants = {
        name: Variant(name=name, **fields) for name, fields in data.get("variants", {}).items()
    }
    if not variants:
        raise ValueError(f"catalog {path} defines no [variants.*] tables")
    return Catalog(path=path.resolve(), variants=variants)
