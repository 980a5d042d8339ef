"""Account tiers: what each tier may use and how much (a TOML file; `free`, `paid` and `internal`
ship in store/tiers.toml, an operator points FLUXGATE_TIERS at their own)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_TIERS = Path(__file__).with_name("tiers.toml")


class Tier(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    variants: tuple[str, ...] = ("*",)  # "*" = every variant that lists this tier in the catalog
    max_megapixels: float = Field(default=4.0, gt=0)  # per image
    images_per_day: int = Field(default=0, ge=0)  # 0 = unlimited; the day is UTC
    requests_per_minute: int = Field(default=0, ge=0)  # 0 = unlimited; submits only
    concurrent_jobs: int = Field(default=0, ge=0)  # 0 = unlimited; queued + running
    priority: int = 0  # higher runs first
    pays_credits: bool = False  # debit the account's credit balance per image

    def allows_variant(self, variant: str) -> bool:
        return "*" in self.variants or variant in self.variants


def load_tiers(path: str | Path | None = None) -> dict[str, Tier]:
    path = Path(path) if path else DEFAULT_TIERS
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    tiers = {name: Tier(name=name, **fields) for name, fields in data.get("tiers", {}).items()}
    if not tiers:
        raise ValueError(f"{path} defines no [tiers.*] tables")
    return tiers
