"""Smoke test of the demo training loops (one short run each on a tiny configuration)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.cogview.config import CogViewConfig, VQVAEConfig
from models.cogview.presets import build_transformer, build_vqvae
from models.cogview.train import sequences, shapes_batch, train_transformer, train_vqvae


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models gain nothing from intra-op threads, and on a shared, loaded CPU every parallel
    # region waits for a busy core: one thread runs these tests ~10x faster there.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_training_loops_run_and_sequences_follow_the_templates() -> None:
    cfg = CogViewConfig(num_layers=1, hidden_size=32, num_heads=2, max_positions=96, text_vocab=256,
                        text_tokenizer="bytes", image_grid=4, size_token="[TINY]",
                        vqvae=VQVAEConfig(channels=8, embed_dim=8, n_codes=32))  # fmt: skip
    rng = np.random.default_rng(0)
    pixels, caps = shapes_batch(6, rng, cfg.image_size)
    assert pixels.shape == (6, 3, 32, 32) and 0 <= pixels.min() and pixels.max() <= 1
    assert any(c.isascii() for c in caps) or any(not c.isascii() for c in caps)
    torch.manual_seed(0)
    vq = build_vqvae(cfg.vqvae, "cpu")
    before = vq.quantize_t.embed.clone()
    train_vqvae(vq, 0.01, 4, 1e-3, rng, lambda s: None)
    assert not torch.equal(before, vq.quantize_t.embed)  # the EMA codebook moved
    seqs = sequences(cfg, vq.encode(pixels), caps, rng)
    c = cfg.cmd
    for row in seqs.tolist():
        assert row[0] in (c("[ROI1]"), c("[TINY]"))
        if row[0] == c("[ROI1]"):  # text-to-image: the image follows [TINY] [BOI1]
            i = row.index(c("[BOI1]"))
            assert row[i - 1] == c("[TINY]") and all(t < cfg.n_image for t in row[i + 1 : i + 17])
            assert row[i + 17] == c("[EOI1]")
        else:  # captioning: image first, text after [ROI1]
            assert row[1] == c("[BOI1]") and row[18:20] == [c("[EOI1]"), c("[ROI1]")]
    model = build_transformer(cfg, "cpu")
    model.init_weights()
    w = model.word_embeddings.weight.clone()
    train_transformer(model, vq, 0.01, 4, 1e-3, rng, lambda s: None)
    assert not torch.equal(w, model.word_embeddings.weight) and not model.training


def test_captions_are_padded_and_super_resolution_rows_follow_the_template() -> None:
    from models.cogview.tasks import sr_middle
    from models.cogview.train import sr_batch

    cfg = CogViewConfig(num_layers=1, hidden_size=32, num_heads=2, max_positions=96, text_vocab=256,
                        text_tokenizer="bytes", image_grid=4, size_token="[TINY]", caption_tokens=56,
                        vqvae=VQVAEConfig(channels=8, embed_dim=8, n_codes=32))  # fmt: skip
    rng = np.random.default_rng(1)
    low, high, caps = sr_batch(8, rng, cfg.image_size)
    assert low.shape == (8, 3, 32, 32) and high.shape == (8, 3, 64, 64)
    torch.manual_seed(0)
    vq = build_vqvae(cfg.vqvae, "cpu")
    pair = (vq.encode(low), vq.encode(high))
    assert pair[1].shape == (8, 64)
    seqs = sequences(cfg, pair[0], caps, rng, pair).tolist()
    c, pad = cfg.cmd, cfg.cmd("[PAD]")
    kinds = set()
    for row in seqs:
        row = [t for t in row if t != pad]
        if row[0] == c("[TINY]"):  # captioning: exactly caption_tokens text ids, space-padded
            kinds.add("caption")
            text = bytes(t - cfg.n_image for t in row[20:]).decode()
            assert len(row) == 20 + 56 and text.rstrip(" ") in caps
        elif c("[ROI2]") in row:  # super-resolution: low window (2x2), the middle, a high window
            kinds.add("sr")
            i = row.index(c("[BOI1]"))
            assert row[i + 5 : i + 10] == sr_middle(cfg) and 0 < len(row) - (i + 10) <= 16
            assert all(t < cfg.n_image for t in row[i + 10 :])
        else:
            kinds.add("t2i")
    assert "sr" in kinds or "caption" in kinds
    model = build_transformer(cfg, "cpu")
    model.init_weights()
    train_transformer(model, vq, 0.01, 10, 1e-3, rng, lambda s: None, sr=True)  # 2 of 10 rows SR
    only_sr = sequences(cfg, pair[0], caps, rng, pair, p_sr=1.0).tolist()
    assert all(c("[ROI2]") in row for row in only_sr)
