"""Settings shared by the gateway and the worker (FLUXGATE_* environment variables)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLUXGATE_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    # A built-in catalog name ("demo", "real") or a TOML file path.
    catalog: str = "demo"
    # Tier definitions (TOML); empty: the shipped store/tiers.toml (free, paid, internal).
    tiers: str = ""
    # Webhook URLs may point at private, loopback or link-local addresses (off: an SSRF guard).
    webhook_allow_private: bool = False
    # How long finished jobs and their images are kept (seconds; `expires_at` in the job).
    retention_s: int = 24 * 3600
