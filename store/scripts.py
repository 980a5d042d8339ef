"""The Lua scripts that make every job transition atomic (sources in store/lua/)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

LUA_DIR = Path(__file__).with_name("lua")


@cache
def source(name: str) -> str:
    return (LUA_DIR / f"{name}.lua").read_text(encoding="utf-8")
