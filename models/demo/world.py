"""The shapes world (specs/shapes-world.md, rendering version 1): one object on a plain background.

Every image is drawn from four discrete attributes, so a deterministic judge (judge.py) can read
them back and score a generator without any learned model. Rendering draws at 4x and downsamples
with Lanczos so edges are anti-aliased like a real photo's, not hard-stepped.

Reproducibility: each call builds its own numpy Generator from the seed it is given (or uses the
Generator passed in), so a render never depends on global random state or on call order elsewhere.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

RENDER_VERSION = 1

# Order matters: it fixes the enumeration order of all_attributes() and so the eval prompt set.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
}
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 40),
    "purple": (140, 50, 170),
    "orange": (240, 140, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Object centre as fractions of the side, (x, y) with y downwards.
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.28, 0.50),
    "right": (0.72, 0.50),
    "top": (0.50, 0.28),
    "bottom": (0.50, 0.72),
    "center": (0.50, 0.50),
}

POSITION_JITTER = 0.04
SIZE_FRACTION = 0.18
SIZE_JITTER = (0.85, 1.15)
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Attributes:
    bg: str
    color: str
    shape: str
    position: str

    def __post_init__(self) -> None:
        # Fail at construction, not deep inside a renderer or a metric, on a typo'd attribute.
        if self.bg not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.bg!r}")
        if self.color not in COLORS:
            raise ValueError(f"unknown color {self.color!r}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}")
        if self.position not in POSITIONS:
            raise ValueError(f"unknown position {self.position!r}")


@dataclass(frozen=True)
class Geometry:
    """The sampled placement, in fractions of the side: centre (cx, cy) and size r."""

    cx: float
    cy: float
    r: float


def all_attributes() -> list[Attributes]:
    """All 3 x 6 x 3 x 5 = 270 combinations, in a fixed order (bg, color, shape, position)."""
    return [
        Attributes(bg, color, shape, pos)
        for bg, color, shape, pos in itertools.product(BACKGROUNDS, COLORS, SHAPES, POSITIONS)
    ]


# --- the held-out split -----------------------------------------------------------------------
# Never in any training set: these 20 prompts measure compositional generalisation, since every
# one of their attribute values is seen in training, only never in this combination.
HELD_OUT_COLOR_SHAPE: tuple[tuple[str, str], ...] = (("purple", "triangle"),)
HELD_OUT_COLOR_SHAPE_BG: tuple[tuple[str, str, str], ...] = (("orange", "circle", "gray"),)


def is_held_out(attrs: Attributes) -> bool:
    return (attrs.color, attrs.shape) in HELD_OUT_COLOR_SHAPE or (
        attrs.color,
        attrs.shape,
        attrs.bg,
    ) in HELD_OUT_COLOR_SHAPE_BG


def held_out_attributes() -> list[Attributes]:
    return [a for a in all_attributes() if is_held_out(a)]


def seen_attributes() -> list[Attributes]:
    return [a for a in all_attributes() if not is_held_out(a)]


# --- rendering --------------------------------------------------------------------------------


def as_generator(seed: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def sample_geometry(attrs: Attributes, rng: np.random.Generator) -> Geometry:
    ax, ay = POSITIONS[attrs.position]
    # Draw order is part of the reproducibility contract: x jitter, y jitter, then size.
    jx, jy = rng.uniform(-POSITION_JITTER, POSITION_JITTER, size=2)
    scale = rng.uniform(*SIZE_JITTER)
    return Geometry(cx=float(ax + jx), cy=float(ay + jy), r=float(SIZE_FRACTION * scale))


def _inset(tri: list[tuple[float, float]], d: float) -> list[tuple[float, float]]:
    """Move each edge of a triangle inwards by d: a homothety about the incentre."""
    p = np.array(tri, dtype=np.float64)  # (3, 2)
    sides = np.array([np.linalg.norm(p[(i + 1) % 3] - p[(i + 2) % 3]) for i in range(3)])
    incentre = (sides[:, None] * p).sum(0) / sides.sum()
    (x1, y1), (x2, y2), (x3, y3) = p
    inradius = abs((x2 - x1) * (y3 - y1) - (x3 - x1) * (y2 - y1)) / sides.sum()
    k = max(inradius - d, 0.0) / max(inradius, 1e-9)
    return [(float(x), float(y)) for x, y in incentre + k * (p - incentre)]


def draw(attrs: Attributes, geometry: Geometry, size: int = 64) -> Image.Image:
    """Draw a given placement (no randomness): 4x canvas, then Lanczos down to `size`."""
    if size < 4:
        raise ValueError(f"size must be >= 4, got {size}")
    big = size * SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), BACKGROUNDS[attrs.bg])
    pen = ImageDraw.Draw(canvas)
    fill = COLORS[attrs.color]
    # PIL treats coordinates as continuous (pixel k spans [k, k+1)) but fills every pixel its
    # outline touches, which makes each shape about one canvas pixel too wide. Insetting the
    # outline by half a pixel keeps centre and area true to the spec (measured: area within 0.3%).
    cx, cy, r = geometry.cx * big, geometry.cy * big, geometry.r * big
    if attrs.shape == "circle":
        pen.ellipse((cx - r + 0.5, cy - r + 0.5, cx + r - 0.5, cy + r - 0.5), fill=fill)
    elif attrs.shape == "square":
        h = 0.9 * r
        pen.rectangle((cx - h + 0.5, cy - h + 0.5, cx + h - 0.5, cy + h - 0.5), fill=fill)
    else:  # triangle, apex up
        pen.polygon(_inset([(cx, cy - r), (cx - r, cy + 0.8 * r), (cx + r, cy + 0.8 * r)], 0.5), fill=fill)
    return canvas.resize((size, size), Image.Resampling.LANCZOS)


def render(attrs: Attributes, size: int = 64, seed: int | np.random.Generator | None = 0) -> Image.Image:
    """Render `attrs` with jittered position and size drawn from `seed` (same seed, same image)."""
    return draw(attrs, sample_geometry(attrs, as_generator(seed)), size)


def object_box_mask(image: Image.Image, margin: int = 3) -> Image.Image:
    """An inpainting mask (L, 255 = repaint) over the box of pixels that differ from the corner
    colour (a scene's object), grown by `margin` px: what a user masks to repaint the object."""
    arr = np.asarray(image.convert("RGB")).astype(float)
    ys, xs = np.nonzero(np.abs(arr - arr[0, 0]).max(axis=-1) > 25)
    h, w = arr.shape[:2]
    mask = Image.new("L", (w, h), 0)
    mask.paste(255, (max(0, xs.min() - margin), max(0, ys.min() - margin), min(w, xs.max() + 1 + margin),
                     min(h, ys.max() + 1 + margin)))  # fmt: skip
    return mask


@functools.cache
def _pool(include_held_out: bool) -> tuple[Attributes, ...]:
    # Cached: training samples millions of times and rebuilding 270 validated dataclasses each
    # time would cost as much as the render of a small image.
    return tuple(all_attributes() if include_held_out else seen_attributes())


def sample_attributes(rng: np.random.Generator, include_held_out: bool = False) -> Attributes:
    """A uniformly random combination; held-out ones only when asked for (evaluation)."""
    pool = _pool(include_held_out)
    return pool[int(rng.integers(len(pool)))]


def render_random(
    size: int = 64, seed: int | np.random.Generator | None = 0, include_held_out: bool = False
) -> tuple[Image.Image, Attributes]:
    rng = as_generator(seed)
    attrs = sample_attributes(rng, include_held_out)
    return render(attrs, size, rng), attrs


def sample_batch(
    n: int,
    size: int = 64,
    rng: np.random.Generator | int | None = None,
    include_held_out: bool = False,
) -> tuple[np.ndarray, list[Attributes]]:
    """A training batch: uint8 images (n, size, size, 3) and their attributes.

    Held-out combinations never appear unless `include_held_out` is set, so a training loop that
    only ever calls this cannot leak the unseen split. Convert with
    `torch.from_numpy(images).permute(0, 3, 1, 2)` where a tensor is wanted.
    """
    gen = as_generator(rng)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    attrs: list[Attributes] = []
    for i in range(n):
        image, a = render_random(size, gen, include_held_out)
        images[i] = np.asarray(image, dtype=np.uint8)
        attrs.append(a)
    return images, attrs
