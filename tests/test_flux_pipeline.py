"""The FLUX pipeline on the demo presets: determinism, batch independence, stopping, tasks."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from models.flux.pipeline import load_flux_pipeline
from models.interface import ImageRequest

DEMOS = ["demo-flux1-schnell", "demo-flux1-dev", "demo-flux2-klein"]


def req(prompt: str, seed: int, steps: int = 4, guidance: float = 3.5, **kw: object) -> ImageRequest:
    return ImageRequest(prompt=prompt, seed=seed, width=64, height=64, steps=steps, guidance=guidance, **kw)


@pytest.mark.parametrize("preset", DEMOS)
def test_demo_presets_generate_64px_deterministically(preset: str) -> None:
    pipe = load_flux_pipeline(preset, {})
    out = pipe.generate([req("a red circle", 1), req("一个蓝色的方块", 2)])
    assert all(isinstance(im, Image.Image) and im.size == (64, 64) for im in out)
    again = load_flux_pipeline(preset, {}).generate([req("a red circle", 1), req("一个蓝色的方块", 2)])
    assert [im.tobytes() for im in out] == [im.tobytes() for im in again]  # type: ignore[union-attr]
    assert out[0].tobytes() != out[1].tobytes()  # type: ignore[union-attr]


@pytest.mark.parametrize("preset", DEMOS)
def test_batch_of_four_equals_each_alone(preset: str) -> None:
    pipe = load_flux_pipeline(preset, {})
    reqs = [req(f"prompt {s}", s, guidance=1.0 + s) for s in (11, 22, 33, 44)]
    batch = pipe.generate_pixels(reqs)
    for r, b in zip(reqs, batch, strict=True):
        alone = pipe.generate_pixels([r])[0]
        assert b is not None and alone is not None
        assert (b - alone).abs().max().item() <= 1e-5


def test_mixed_steps_in_one_batch_equal_each_alone() -> None:
    pipe = load_flux_pipeline("demo-flux1-dev", {})
    reqs = [req("a", 1, steps=2), req("b", 2, steps=5), req("c", 3, steps=3, guidance=7.0)]
    batch = pipe.generate_pixels(reqs)
    for r, b in zip(reqs, batch, strict=True):
        assert (b - pipe.generate_pixels([r])[0]).abs().max().item() <= 1e-5  # type: ignore[operator]


def test_on_step_reports_progress_and_stops_requests() -> None:
    pipe = load_flux_pipeline("demo-flux1-schnell", {})
    calls: list[tuple[int, int]] = []

    def on_step(step: int, total: int) -> list[int]:
        calls.append((step, total))
        return [1] if step == 2 else []

    reqs = [req("a", 1), req("b", 2), req("c", 3)]
    out = pipe.generate(reqs, on_step=on_step)
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert out[1] is None and out[0] is not None and out[2] is not None
    pixels = pipe.generate_pixels(reqs, on_step=lambda step, total: [1] if step == 2 else [])
    alone = pipe.generate_pixels([reqs[2]])[0]
    assert pixels[1] is None and (pixels[2] - alone).abs().max().item() <= 1e-5  # type: ignore[operator]


def test_mixed_sizes_are_rejected() -> None:
    pipe = load_flux_pipeline("demo-flux1-schnell", {})
    other = ImageRequest(prompt="x", seed=1, width=128, height=64, steps=4, guidance=0.0)
    with pytest.raises(ValueError, match="share"):
        pipe.generate([req("a", 1), other])


def test_reference_images_run_on_flux2_and_kontext_style_flux1() -> None:
    ref = Image.new("RGB", (80, 48), (200, 30, 30))
    pipe = load_flux_pipeline("demo-flux2-klein", {})
    out = pipe.generate([req("make it blue", 5, images=(ref, ref))])
    assert out[0] is not None and out[0].size == (64, 64)


def test_non_rgb_sizes_round_down_to_the_token_grid() -> None:
    pipe = load_flux_pipeline("demo-flux1-schnell", {})
    px = pipe.token_px  # pixels per token side: 16 for the published models
    r = ImageRequest(prompt="x", seed=1, width=4 * px + px // 2, height=2 * px + 3, steps=2, guidance=0.0)
    assert pipe.generate([r])[0].size == (4 * px, 2 * px)  # type: ignore[union-attr]


def test_full_presets_need_checkpoints() -> None:
    with pytest.raises(ValueError, match="needs checkpoint paths"):
        load_flux_pipeline("flux1-schnell", {})


def test_generate_uses_cpu_noise_independent_of_global_rng() -> None:
    pipe = load_flux_pipeline("demo-flux2-klein", {})
    torch.manual_seed(0)
    a = pipe.generate_pixels([req("x", 9)])[0]
    torch.manual_seed(1234)
    b = pipe.generate_pixels([req("x", 9)])[0]
    assert torch.equal(a, b)  # type: ignore[arg-type]


def test_fill_condition_is_masked_latents_then_unshuffled_mask() -> None:
    from models.flux import sampling

    lat = torch.randn(2, 16, 8, 8)
    mask = (torch.rand(2, 1, 64, 64) > 0.5).float()
    cond = sampling.fill_condition(lat, mask, 8)
    assert cond.shape == (2, 16, 64 + 256)
    assert torch.equal(cond[..., :64], sampling.pack(lat))
    assert torch.equal(cond[..., 64:], sampling.pack(torch.nn.functional.pixel_unshuffle(mask, 8)))


def _variant(task: str) -> object:
    """demo-flux1-dev as a Fill or Kontext model; Fill adds masked latents + the unshuffled mask."""
    from dataclasses import replace

    from models.flux.presets import get_preset

    p = get_preset("demo-flux1-dev")
    packed = 4 * p.autoencoder.z_channels
    in_channels = 2 * packed + 4 * p.autoencoder.downsample**2 if task == "fill" else packed
    return replace(p, name=f"test-{task}", task=task, transformer=replace(p.transformer, in_channels=in_channels))


def test_fill_task_runs_and_is_batch_independent() -> None:
    pipe = load_flux_pipeline(_variant("fill"), {})  # type: ignore[arg-type]
    image = Image.new("RGB", (64, 64), (10, 200, 10))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    reqs = [req("fill it", s, images=(image,), mask=mask) for s in (1, 2)]
    batch = pipe.generate_pixels(reqs)
    assert batch[0] is not None and batch[0].shape == (3, 64, 64)
    assert (batch[1] - pipe.generate_pixels(reqs[1:])[0]).abs().max().item() <= 1e-5  # type: ignore[operator]
    with pytest.raises(ValueError, match="mask"):
        pipe.generate([req("no mask", 1, images=(image,))])


def test_kontext_reference_tokens_condition_and_are_sliced_off() -> None:
    pipe = load_flux_pipeline(_variant("kontext"), {})  # type: ignore[arg-type]
    red, blue = Image.new("RGB", (64, 64), (220, 0, 0)), Image.new("RGB", (64, 64), (0, 0, 220))
    a, b = pipe.generate_pixels([req("edit", 1, images=(red,)), req("edit", 1, images=(blue,))])
    assert a is not None and b is not None and a.shape == (3, 64, 64)
    assert (a - b).abs().max().item() > 1e-3  # the reference changes the result
    alone = pipe.generate_pixels([req("edit", 1, images=(blue,))])[0]
    assert (b - alone).abs().max().item() <= 1e-5  # type: ignore[operator]


def test_bfloat16_pipeline_runs() -> None:
    pipe = load_flux_pipeline("demo-flux2-klein", {}, dtype=torch.bfloat16)
    assert next(pipe.transformer.parameters()).dtype == torch.bfloat16
    px = pipe.generate_pixels([req("a", 1)])[0]
    assert px is not None and torch.isfinite(px).all()
