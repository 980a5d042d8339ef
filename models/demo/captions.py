"""Caption grammar of the shapes world in English and Chinese, and its inverse.

The same strings are training prompts, evaluation prompts and captioning targets, so the parser
is strict: a caption parses only if it is exactly a sentence of the grammar (after normalising
case, whitespace and a final full stop). A keyword-spotting parser would reward a captioner that
emits "red green blue circle" and would inflate caption accuracy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from models.demo.world import BACKGROUNDS, COLORS, POSITIONS, SHAPES, Attributes

# The Chinese vocabulary, per spec.
ZH_COLORS: dict[str, str] = {
    "red": "红色",
    "green": "绿色",
    "blue": "蓝色",
    "yellow": "黄色",
    "purple": "紫色",
    "orange": "橙色",
}
ZH_SHAPES: dict[str, str] = {"circle": "圆形", "square": "正方形", "triangle": "三角形"}
ZH_BACKGROUNDS: dict[str, str] = {"white": "白色", "black": "黑色", "gray": "灰色"}
ZH_POSITIONS: dict[str, str] = {
    "left": "左边",
    "right": "右边",
    "top": "上边",
    "bottom": "下边",
    "center": "中间",
}


# background=False drops the background phrase: the prompt of an edit whose background comes from a
# reference image ("a red circle on the left"). Such a caption does not parse (it names 3 of 4).


def caption_en(attrs: Attributes, background: bool = True) -> str:
    where = "in the center" if attrs.position == "center" else f"on the {attrs.position}"
    tail = f" on a {attrs.bg} background" if background else ""
    return f"a {attrs.color} {attrs.shape} {where}{tail}"


def caption_zh(attrs: Attributes, background: bool = True) -> str:
    head = f"{ZH_BACKGROUNDS[attrs.bg]}背景上" if background else ""
    return f"{head}{ZH_POSITIONS[attrs.position]}有一个{ZH_COLORS[attrs.color]}的{ZH_SHAPES[attrs.shape]}"


def caption(attrs: Attributes, language: str = "en", background: bool = True) -> str:
    if language == "en":
        return caption_en(attrs, background)
    if language == "zh":
        return caption_zh(attrs, background)
    raise ValueError(f"unknown caption language {language!r} (expected 'en' or 'zh')")


def _alt(words: Iterable[str]) -> str:
    # Longest first so no alternative is shadowed by a prefix of another.
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_non_center = [p for p in POSITIONS if p != "center"]
_EN = re.compile(
    rf"a (?P<color>{_alt(COLORS)}) (?P<shape>{_alt(SHAPES)}) "
    rf"(?:on the (?P<position>{_alt(_non_center)})|in the (?P<center>center)) "
    rf"on a (?P<bg>{_alt(BACKGROUNDS)}) background"
)
_ZH = re.compile(
    rf"(?P<bg>{_alt(ZH_BACKGROUNDS.values())})背景上(?P<position>{_alt(ZH_POSITIONS.values())})"
    rf"有一个(?P<color>{_alt(ZH_COLORS.values())})的(?P<shape>{_alt(ZH_SHAPES.values())})"
)


def _invert(table: dict[str, str]) -> dict[str, str]:
    return {v: k for k, v in table.items()}


_ZH_INV = {
    "bg": _invert(ZH_BACKGROUNDS),
    "position": _invert(ZH_POSITIONS),
    "color": _invert(ZH_COLORS),
    "shape": _invert(ZH_SHAPES),
}


def parse_caption(text: str) -> Attributes | None:
    """English or Chinese caption -> its attributes; None if it is not a sentence of the grammar.

    Normalisation is limited to what a tokenizer's decode commonly adds: case, runs of
    whitespace (Chinese decodes may put spaces between characters), a final full stop, and the
    British "grey"/"centre" spellings.
    """
    en = " ".join(text.lower().split()).rstrip(".").strip()
    en = re.sub(r"\bgrey\b", "gray", en)
    en = re.sub(r"\bcentre\b", "center", en)
    m = _EN.fullmatch(en)
    if m is not None:
        return Attributes(bg=m["bg"], color=m["color"], shape=m["shape"], position=m["position"] or "center")
    zh = "".join(text.split()).rstrip("。.")
    m = _ZH.fullmatch(zh)
    if m is not None:
        return Attributes(**{key: _ZH_INV[key][m[key]] for key in _ZH_INV})
    return None
