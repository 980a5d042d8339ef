"""The Lua scripts that make every job transition atomic (sources in store/lua/)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

LUA_DIR = Path(__file__).with_name("lua")


# Scripts that settle or release reservations share the function in release.lua.
_WITH_RELEASE = {"finish", "cancel", "start"}


@cache
def source(name: str) -> str:
    text = (LUA_DIR / f"{name}.lua").read_text(encoding="utf-8")
    if name in _WITH_RELEASE:
        text = (LUA_DIR / "release.lua").read_text(encoding="utf-8") + "\n" + text
    return text
