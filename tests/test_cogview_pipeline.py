"""The CogView pipeline as the worker sees it: batches, seeds, progress, cancellation, tasks."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from models.cogview.pipeline import CogViewPipeline, load_cogview_pipeline
from models.interface import ImageRequest, Pipeline


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models gain nothing from intra-op threads, and on a shared, loaded CPU every parallel
    # region waits for a busy core: one thread runs these tests ~10x faster there.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pipe() -> CogViewPipeline:
    return load_cogview_pipeline("demo-cogview", {})


def req(prompt: str, seed: int, task: str = "text-to-image", size: int = 64, **kw) -> ImageRequest:
    return ImageRequest(prompt, seed, size, size, 0, 0.0, task=task, **kw)


def arr(im) -> np.ndarray:
    return np.asarray(im)


def test_demo_generates_64px_batch_independent(pipe: CogViewPipeline) -> None:
    as_protocol: Pipeline = pipe  # type-checked against models.interface
    assert callable(as_protocol.generate)
    reqs = [req("a red circle", 1), req("一个蓝色的正方形", 2), req("a red circle", 3), req("x", 4)]
    batch = pipe.generate(reqs)  # speed is measured by benchmarks/cogview_sampling.py, not timed here
    assert all(im is not None and im.size == (64, 64) for im in batch)
    for r, im in zip(reqs, batch, strict=True):
        assert np.array_equal(arr(pipe.generate([r])[0]), arr(im))
    # Demo weights are deterministic across loads.
    again = load_cogview_pipeline("demo-cogview", {})
    assert np.array_equal(arr(again.generate(reqs[:1])[0]), arr(batch[0]))


def test_progress_and_cancellation(pipe: CogViewPipeline) -> None:
    reqs = [req("one", 1), req("two", 2), req("three", 3)]
    full = pipe.generate(reqs)
    seen: list[tuple[int, int]] = []

    def on_step(done: int, total: int) -> list[int] | None:
        seen.append((done, total))
        return [1] if done >= total // 2 and not any(d >= total // 2 for d, _ in seen[:-1]) else None

    out = pipe.generate(reqs, on_step)
    assert out[1] is None
    assert np.array_equal(arr(out[0]), arr(full[0])) and np.array_equal(arr(out[2]), arr(full[2]))
    assert seen[-1] == (3 * 64, 3 * 64) and all(a[0] < b[0] for a, b in zip(seen, seen[1:], strict=False))
    assert pipe.generate(reqs[:1], lambda d, t: [0]) == [None]


def test_super_resolution_request_and_upscale(pipe: CogViewPipeline) -> None:
    src = pipe.generate([req("a red circle", 1)])[0]
    out = pipe.generate([req("a red circle", 7, task="super-resolution", size=128, images=(src,))])
    assert out[0] is not None and out[0].size == (128, 128)
    up = pipe.upscale([src], seeds=[7], prompts=["a red circle"])
    assert np.array_equal(arr(up[0]), arr(out[0]))
    with pytest.raises(ValueError, match="images"):
        pipe.generate([req("x", 1, task="super-resolution", size=128)])
    with pytest.raises(ValueError, match="64x64"):
        pipe.generate([req("x", 1, size=256)])
    with pytest.raises(ValueError, match="inpaint"):
        pipe.generate([req("x", 1, task="inpaint")])


def test_caption_score_rerank(pipe: CogViewPipeline) -> None:
    ims = pipe.generate([req("a", s) for s in range(3)])
    caps = pipe.caption(ims, language="en")
    assert len(caps) == 3 and all(c.isascii() for c in caps)
    zh = pipe.caption(ims[:1], language="zh")
    assert isinstance(zh[0], str)
    scores = pipe.score("a red circle", ims)
    assert len(scores) == 3 and all(s < 0 for s in scores)
    order = pipe.rerank("a red circle", ims)
    assert sorted(order) == [0, 1, 2] and scores[order[0]] == max(scores)
    n = len(b"a red circle")
    assert pipe.cap_loss("a red circle", ims) == pytest.approx([-s / n for s in scores])


def test_fp16_turns_on_pb_relax() -> None:
    p = load_cogview_pipeline("demo-cogview", {}, dtype=torch.float16)
    assert p.cfg.pb_relax and p.transformer.transformer.layers[0].attention.pb_relax


def test_models_cogview_imports_no_service_code() -> None:
    banned = {"redis", "fastapi", "store", "app", "workers"}
    for path in (ROOT / "models" / "cogview").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            assert not {n.split(".")[0] for n in names} & banned, path
