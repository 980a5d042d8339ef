"""The shapes world: renderer, captions, held-out split, judge, prompt set and metrics."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageFilter

from models.demo.captions import caption_en, caption_zh, parse_caption
from models.demo.judge import judge, read
from models.demo.metrics import (
    accuracy_report,
    edge_sharpness,
    evaluate,
    grain_share,
    rerank_report,
    sr_report,
)
from models.demo.prompts import eval_prompts
from models.demo.world import (
    BACKGROUNDS,
    COLORS,
    Attributes,
    all_attributes,
    held_out_attributes,
    is_held_out,
    render,
    render_random,
    sample_batch,
)


def test_270_combinations_and_the_held_out_split() -> None:
    combos = all_attributes()
    assert len(combos) == len(set(combos)) == 270
    held = held_out_attributes()
    assert len(held) == 20
    assert sum(a.color == "purple" and a.shape == "triangle" for a in held) == 15
    assert sum((a.color, a.shape, a.bg) == ("orange", "circle", "gray") for a in held) == 5
    assert not is_held_out(Attributes("gray", "orange", "square", "left"))
    with pytest.raises(ValueError):
        Attributes("grey", "red", "circle", "left")


def test_render_is_reproducible_and_follows_the_palette() -> None:
    a = Attributes("gray", "blue", "triangle", "center")
    first = render(a, 64, seed=7)
    assert first.mode == "RGB" and first.size == (64, 64)
    assert first.tobytes() == render(a, 64, seed=7).tobytes()
    assert first.tobytes() == render(a, 64, np.random.default_rng(7)).tobytes()
    assert first.tobytes() != render(a, 64, seed=8).tobytes()  # jitter differs
    arr = np.asarray(render(a, 48, seed=1), dtype=int)
    assert arr.shape == (48, 48, 3)
    assert np.abs(arr[0, 0] - BACKGROUNDS["gray"]).max() <= 1
    # The centre pixel is inside the object for every jitter of a centred object.
    assert np.abs(arr[24, 24] - COLORS["blue"]).max() <= 3
    image, attrs = render_random(32, seed=3)
    assert image.size == (32, 32) and not is_held_out(attrs)


def test_sample_batch_excludes_held_out_unless_asked() -> None:
    images, attrs = sample_batch(400, 16, np.random.default_rng(0))
    assert images.shape == (400, 16, 16, 3) and images.dtype == np.uint8
    assert not any(is_held_out(a) for a in attrs)
    assert len(set(attrs)) > 150  # actually spread over the 250 training combinations
    _, with_held = sample_batch(400, 8, 0, include_held_out=True)
    assert any(is_held_out(a) for a in with_held)
    again, same = sample_batch(400, 16, np.random.default_rng(0))
    assert np.array_equal(images, again) and attrs == same


@pytest.mark.parametrize(("size", "n"), [(32, 300), (64, 300), (128, 200)])
def test_judge_reads_fresh_renders(size: int, n: int) -> None:
    rng = np.random.default_rng(1000 + size)
    right = 0
    for _ in range(n):
        image, attrs = render_random(size, rng, include_held_out=True)
        right += judge(image) == attrs
    assert right / n >= 0.99


def test_judge_survives_mild_blur_and_noise() -> None:
    rng = np.random.default_rng(5)
    right, n = 0, 150
    for _ in range(n):
        image, attrs = render_random(64, rng, include_held_out=True)
        blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(0.8)), dtype=np.float64)
        noisy = np.clip(blurred + rng.normal(0, 10, blurred.shape), 0, 255).astype(np.uint8)
        right += judge(Image.fromarray(noisy)) == attrs
    assert right / n >= 0.97


def test_judge_gives_a_guess_for_blank_or_garbage_images() -> None:
    garbage = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for image in (
        Image.new("RGB", (64, 64), BACKGROUNDS["white"]),
        Image.new("RGB", (1, 1)),
        Image.new("L", (20, 20), 128),
        Image.new("RGBA", (40, 40), (200, 30, 30, 0)),
        Image.fromarray(garbage),
    ):
        assert isinstance(judge(image), Attributes)
    reading = read(render(Attributes("black", "green", "square", "left"), 64, 0))
    assert reading.fill_ratio > 0.9 and reading.centroid[0] < 0.4


def test_captions_match_the_spec_and_round_trip() -> None:
    a = Attributes("white", "red", "circle", "left")
    assert caption_en(a) == "a red circle on the left on a white background"
    assert caption_zh(a) == "白色背景上左边有一个红色的圆形"
    c = Attributes("gray", "purple", "triangle", "center")
    assert caption_en(c) == "a purple triangle in the center on a gray background"
    for attrs in all_attributes():
        assert parse_caption(caption_en(attrs)) == attrs
        assert parse_caption(caption_zh(attrs)) == attrs
    # What a tokenizer's decode may add: case, spacing, a full stop, British spelling.
    assert parse_caption("A red circle on the left on a grey background.") == Attributes(
        "gray", "red", "circle", "left"
    )
    assert parse_caption("白 色 背景上 左边 有一个红色的圆形。") == a
    for bad in (
        "",
        "a red green circle on the left on a white background",
        "red circle left white",
        "a red circle on the center on a white background",
        "白色背景上左边有一个红色的",
    ):
        assert parse_caption(bad) is None


def test_eval_prompts_cover_every_combination_deterministically() -> None:
    prompts = eval_prompts()
    assert len(prompts) == 270 and {p.attrs for p in prompts} == set(all_attributes())
    assert sum(p.held_out for p in prompts) == 20
    assert prompts == eval_prompts()
    assert eval_prompts(10) == prompts[:10]
    assert eval_prompts(540)[270:] != prompts  # repeats get fresh image seeds
    assert [p.attrs for p in eval_prompts(540)[270:]] == [p.attrs for p in prompts]
    assert prompts[0].text("zh") == caption_zh(prompts[0].attrs)


def test_evaluate_scores_a_perfect_and_a_broken_generator() -> None:
    def perfect(batch: list[tuple[str, int]]) -> list[Image.Image | None]:
        return [render(parse_caption(text) or all_attributes()[0], 32, seed) for text, seed in batch]

    report = evaluate(perfect, language="zh", batch_size=32)
    assert report["accuracy"] == 1.0 and report["unseen"]["n"] == 20 and report["seen"]["n"] == 250
    assert report["per_attribute"]["shape"] == 1.0 and report["seconds_per_image"] >= 0.0

    report = evaluate(lambda batch: [None] * len(batch), eval_prompts(12))
    assert report["accuracy"] == 0.0 and report["failed"] == 12


def test_accuracy_and_rerank_reports() -> None:
    t = [Attributes("white", "red", "circle", "left"), Attributes("gray", "purple", "triangle", "top")]
    p = [Attributes("white", "red", "square", "left"), t[1]]
    r = accuracy_report(t, p)
    assert r["accuracy"] == 0.5 and r["per_attribute"]["shape"] == 0.5 and r["per_attribute"]["bg"] == 1
    assert r["seen"]["accuracy"] == 0.0 and r["unseen"]["accuracy"] == 1.0
    rr = rerank_report([[False, True], [False, False]], [[0.1, 0.9], [0.5, 0.2]])
    assert rr == {"top1_accuracy": 0.5, "random_accuracy": 0.25, "oracle_accuracy": 0.5}


def test_edge_sharpness_prefers_true_detail_over_bicubic_and_blur() -> None:
    combos = all_attributes()[::27]
    high = [render(a, 64, i) for i, a in enumerate(combos)]
    low = [render(a, 32, i) for i, a in enumerate(combos)]
    assert sr_report(high, low, combos)["sharpness_ratio"] > 1.3
    blurred = [im.filter(ImageFilter.GaussianBlur(1.5)) for im in high]
    assert sr_report(blurred, low)["sharpness_ratio"] < 1.0
    assert edge_sharpness(Image.new("RGB", (16, 16))) == 0.0


def test_faint_grain_is_reported_and_does_not_pass_for_blur() -> None:
    image = render(Attributes("gray", "yellow", "square", "top"), 128, 0)
    noise = np.random.default_rng(0).integers(-1, 2, (128, 128, 1))  # one level, as a decoder's grain
    grainy = Image.fromarray((np.asarray(image).astype(int) + noise).clip(0, 255).astype(np.uint8))
    assert grain_share(image) < 0.1 < 0.5 < grain_share(grainy)
    # The edges are as steep as before: grain neither hides them nor counts as edges.
    assert abs(edge_sharpness(grainy) - edge_sharpness(image)) < 0.05 * edge_sharpness(image)


def test_demo_package_stays_free_of_service_imports() -> None:
    code = (
        "import sys, models.demo.world, models.demo.captions, models.demo.judge, "
        "models.demo.prompts, models.demo.metrics\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('redis', 'fastapi', 'app', 'store', 'workers')]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
