"""CogView sampling: KV cache == recompute, batch independence, validity states, cancellation."""

from __future__ import annotations

import pytest
import torch

from models.cogview.config import CogViewConfig, VQVAEConfig
from models.cogview.sampling import IMAGE, START, TEXT, fill, sample_next, validity_table
from models.cogview.tasks import caption_prefix, t2i_prefix
from models.cogview.transformer import CogViewTransformer


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models gain nothing from intra-op threads, and on a shared, loaded CPU every parallel
    # region waits for a busy core: one thread runs these tests ~10x faster there.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_model(seed: int = 0) -> CogViewTransformer:
    cfg = CogViewConfig(
        num_layers=2,
        hidden_size=64,
        num_heads=4,
        max_positions=96,
        text_vocab=256,
        text_tokenizer="bytes",
        image_grid=4,
        vqvae=VQVAEConfig(channels=16, embed_dim=8, n_codes=64),
    )
    torch.manual_seed(seed)
    m = CogViewTransformer(cfg).eval()
    m.init_weights()
    with torch.no_grad():  # sharper, input-dependent distributions than the 0.02 init gives
        m.word_embeddings.weight.mul_(4)
    return m


def text(s: str, cfg: CogViewConfig) -> list[int]:
    return [b + cfg.n_image for b in s.encode()]


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_kv_cache_equals_full_recompute_and_mems() -> None:
    m = tiny_model()
    cfg = m.cfg
    # Different prompt lengths (left padding) and given tokens between holes (as in SR windows).
    prefixes = [
        t2i_prefix(cfg, text("a red circle", cfg)),
        t2i_prefix(cfg, text("猫", cfg)),
        t2i_prefix(cfg, text("a red circle", cfg)),
    ]
    suffix = torch.full((3, 24), -1)
    suffix[:, 6:9] = torch.tensor([[3, 4, 5], [6, 7, 8], [9, 10, 11]])
    out = {
        d: fill(m, prefixes, suffix, gens(1, 2, 3), top_k=30, temperature=1.0, decoder=d)[0]
        for d in ("kv", "full", "mems")
    }
    assert torch.equal(out["kv"], out["full"])
    assert torch.equal(out["kv"], out["mems"])
    assert torch.equal(out["kv"][:, 6:9], suffix[:, 6:9])  # given tokens kept
    assert not torch.equal(out["kv"][0], out["kv"][2])  # same prompt, different seeds
    assert len(set(out["kv"][0].tolist())) > 4


def test_batch_of_four_equals_each_alone() -> None:
    m = tiny_model()
    cfg = m.cfg
    prompts = ["a red circle", "一个蓝色的正方形", "x", "a red circle"]
    prefixes = [t2i_prefix(cfg, text(p, cfg)) for p in prompts]
    suffix = torch.full((4, cfg.image_tokens), -1)
    seeds = (11, 12, 13, 14)
    batch = fill(m, prefixes, suffix, gens(*seeds), top_k=cfg.top_k, temperature=1.0)[0]
    for i in range(4):
        alone = fill(m, prefixes[i : i + 1], suffix[:1], gens(seeds[i]), top_k=cfg.top_k, temperature=1.0)[0]
        assert torch.equal(batch[i], alone[0])


def test_validity_state_machine() -> None:
    m = tiny_model()
    cfg = m.cfg
    table = validity_table(cfg)
    assert not table[START, : cfg.n_image].any() and table[START, cfg.cmd("[BOI1]")]
    assert table[IMAGE, : cfg.n_image].all() and not table[IMAGE, cfg.n_image :].any()
    assert table[TEXT, cfg.n_image : cfg.command_base].all()
    assert not table[TEXT, : cfg.n_image].any() and not table[TEXT, cfg.command_base :].any()
    assert not table[:, cfg.n_real_tokens :].any()  # vocabulary padding never sampled
    # In an image only codes come out; after [EOI1] [ROI1] only text.
    img = fill(m, [t2i_prefix(cfg, text("hi", cfg))], torch.full((1, 16), -1), gens(0), top_k=0, temperature=1.0)[0]
    assert (img < cfg.n_image).all()
    cap = fill(m, [caption_prefix(cfg, img[0].tolist())], torch.full((1, 30), -1), gens(0), top_k=0, temperature=1.0)[0]
    assert ((cap >= cfg.n_image) & (cap < cfg.command_base)).all()


def test_top_k_one_is_greedy_and_temperature_scales() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    allowed = torch.ones(3, 50, dtype=torch.bool)
    allowed[:, 0] = False
    u = torch.rand(3)
    masked = logits.masked_fill(~allowed, float("-inf"))
    assert torch.equal(sample_next(logits, allowed, u, 1, 1.0), masked.argmax(-1))
    # Very low temperature concentrates all mass on the best allowed token.
    assert torch.equal(sample_next(logits, allowed, u, 0, 1e-4), masked.argmax(-1))
    # Inverse-CDF draws follow the distribution: u near 0 picks the first id with mass.
    assert (sample_next(logits, allowed, torch.zeros(3), 0, 1.0) == 1).all()


def test_cancel_mid_batch_keeps_the_others() -> None:
    m = tiny_model()
    cfg = m.cfg
    prefixes = [t2i_prefix(cfg, text(p, cfg)) for p in ("one", "two", "three")]
    suffix = torch.full((3, 16), -1)
    full, stopped = fill(m, prefixes, suffix, gens(1, 2, 3), top_k=20, temperature=1.0)
    assert not stopped.any()
    seen: list[int] = []

    def on_token(n: int) -> list[int] | None:
        seen.append(n)
        return [1] if n == 5 else None

    part, stopped = fill(m, prefixes, suffix, gens(1, 2, 3), top_k=20, temperature=1.0, on_token=on_token)
    assert stopped.tolist() == [False, True, False]
    assert seen == list(range(1, 17))
    assert torch.equal(part[[0, 2]], full[[0, 2]])
