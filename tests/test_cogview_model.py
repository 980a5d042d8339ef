"""CogView transformer and VQ-VAE: published sizes, token ids, Sandwich-LN, PB-relax."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.cogview.config import COMMANDS, CogViewConfig, VQVAEConfig
from models.cogview.presets import PRESETS, build_model, build_vqvae, parameter_count
from models.cogview.sampling import positions_for
from models.cogview.transformer import (
    CogViewTransformer,
    layer_norm_in_dtype,
    pb_relax_layer_norm,
    relaxed_attention,
    standard_attention,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models gain nothing from intra-op threads, and on a shared, loaded CPU every parallel
    # region waits for a busy core: one thread runs these tests ~10x faster there.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(**kw) -> CogViewConfig:
    base = dict(
        num_layers=2,
        hidden_size=64,
        num_heads=4,
        max_positions=96,
        text_vocab=256,
        text_tokenizer="bytes",
        image_grid=4,
        vqvae=VQVAEConfig(channels=16, embed_dim=8, n_codes=64),
    )
    return CogViewConfig(**{**base, **kw})


def test_published_size_on_meta_device() -> None:
    model = build_model("cogview-4b")
    assert next(model.parameters()).device.type == "meta"
    assert parameter_count(model) == 3_928_849_920
    sd = model.state_dict()
    assert len(sd) == 772
    assert sd["word_embeddings.weight"].shape == (58240, 2560)
    assert sd["transformer.position_embeddings.weight"].shape == (1089, 2560)
    assert sd["transformer.layers.47.attention.query_key_value.weight"].shape == (7680, 2560)
    assert sd["transformer.layers.0.mlp.dense_4h_to_h.weight"].shape == (2560, 10240)
    for ln in ("input_layernorm", "third_layernorm", "post_attention_layernorm", "fourth_layernorm"):
        assert sd[f"transformer.layers.3.{ln}.bias"].shape == (2560,)
    assert "transformer.final_layernorm.weight" in sd
    # Tied head: no separate output matrix.
    assert not any("lm_head" in k or "output" in k for k in sd)


def test_unified_token_ids() -> None:
    cfg = PRESETS["cogview-4b"]
    assert len(COMMANDS) == 27
    assert cfg.n_real_tokens == 58219 and cfg.vocab_size == 58240
    expected = {
        "[PAD]": 58192,
        "[BOI1]": 58193,
        "[EOI1]": 58196,
        "[ROI1]": 58199,
        "[ROI2]": 58200,
        "[SEP]": 58202,
        "[MASK]": 58203,
        "[BASE]": 58208,
        "[BIG]": 58209,
        "[POS0]": 58210,
        "[POS8]": 58218,
    }
    assert {k: cfg.cmd(k) for k in expected} == expected
    assert cfg.max_text_tokens == 61


def test_published_vqvae_layout() -> None:
    with torch.device("meta"):
        vq = build_vqvae(VQVAEConfig(), "meta")
    sd = vq.state_dict()
    assert set(sd) == {
        *(f"enc_b.blocks.{i}.{p}" for i in (0, 2, 4, 6) for p in ("weight", "bias")),
        *(f"dec.blocks.{i}.{p}" for i in (0, 2, 4, 6) for p in ("weight", "bias")),
        "quantize_t.embed",
        "quantize_t.cluster_size",
        "quantize_t.embed_avg",
    }
    assert sd["quantize_t.embed"].shape == (256, 8192)
    assert sd["enc_b.blocks.0.weight"].shape == (512, 3, 4, 4)
    assert sd["enc_b.blocks.6.weight"].shape == (256, 512, 1, 1)
    assert sd["dec.blocks.0.weight"].shape == (256, 512, 4, 4)  # ConvT: [in, out, k, k]
    assert sd["dec.blocks.6.weight"].shape == (3, 512, 1, 1)
    assert 18e6 < parameter_count(vq) < 20e6


def test_vqvae_codes_and_ema() -> None:
    torch.manual_seed(0)
    vq = build_vqvae(VQVAEConfig(channels=16, embed_dim=8, n_codes=32, downsample=2))
    pixels = torch.rand(2, 3, 16, 16)
    codes = vq.encode(pixels)
    assert codes.shape == (2, 16) and codes.max() < 32
    assert vq.decode(codes).shape == (2, 3, 16, 16)
    # Codes are the nearest codebook rows.
    z = vq.enc_b((pixels - vq.mean) / vq.std).permute(0, 2, 3, 1).reshape(-1, 8)
    assert torch.equal(codes.flatten(), torch.cdist(z, vq.quantize_t.embed.t()).argmin(1))
    before = vq.quantize_t.embed.clone()
    vq.train()
    out, diff = vq((pixels - vq.mean) / vq.std)
    assert out.shape == pixels.shape and diff.item() >= 0
    assert not torch.equal(before, vq.quantize_t.embed) and vq.quantize_t.cluster_size.sum() > 0


def test_sandwich_ln_order_and_tied_head() -> None:
    torch.manual_seed(0)
    m = CogViewTransformer(tiny()).eval()
    m.init_weights()
    with torch.no_grad():  # non-trivial norms so a wrong order would show
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    tok = torch.randint(0, 64, (2, 7))
    pos = torch.arange(7).expand(2, -1)
    x = m.word_embeddings(tok) + m.transformer.position_embeddings(pos)
    for layer in m.transformer.layers:
        h = layer.input_layernorm(x)
        q, k, v = (t.view(2, 7, 4, 16).transpose(1, 2) for t in layer.attention.query_key_value(h).chunk(3, -1))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(2, 7, 64)
        x = x + layer.third_layernorm(layer.attention.dense(a))
        mlp = layer.mlp.dense_4h_to_h(
            F.gelu(layer.mlp.dense_h_to_4h(layer.post_attention_layernorm(x)), approximate="tanh")
        )
        x = x + layer.fourth_layernorm(mlp)
    ref = m.transformer.final_layernorm(x) @ m.word_embeddings.weight.t()
    torch.testing.assert_close(m(tok, pos), ref, atol=1e-5, rtol=1e-5)


def test_position_reset_at_roi2() -> None:
    cfg = tiny()
    c = cfg.cmd
    seq = [c("[ROI1]"), 70, 71, c("[BASE]"), c("[BOI1]"), 1, 2, c("[EOI1]"), c("[ROI2]"), c("[POS0]"), 5]
    assert positions_for(seq, cfg) == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2]
    assert positions_for(list(range(200)), cfg)[-1] == cfg.max_positions - 1  # clipped to the table


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_pb_relax_layer_norm_exact_in_fp32(scale: float) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 5, 64) * scale
    x[0, 0, 3] = 40 * scale  # an outlier dimension, as in deep CogView layers
    w, b = torch.randn(64), torch.randn(64)
    ref = F.layer_norm(x, (64,), w, b, 1e-5)
    torch.testing.assert_close(pb_relax_layer_norm(x, w, b, 1e-5), ref, atol=1e-5, rtol=1e-5)


def test_pb_relax_attention_exact_in_fp32() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 9, 16) * 3 for _ in range(3))
    mask = torch.ones(9, 9, dtype=torch.bool).tril()
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(relaxed_attention(q, k, v, mask, 32.0), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(standard_attention(q, k, v, mask), ref, atol=1e-5, rtol=1e-5)


def test_pb_relax_model_on_off_agree_in_fp32() -> None:
    torch.manual_seed(0)
    plain = CogViewTransformer(tiny()).eval()
    plain.init_weights()
    relaxed = CogViewTransformer(tiny(pb_relax=True)).eval()
    relaxed.load_state_dict(plain.state_dict())
    tok = torch.randint(0, 300, (2, 20))
    pos = torch.arange(20).expand(2, -1)
    torch.testing.assert_close(relaxed(tok, pos), plain(tok, pos), atol=1e-5, rtol=1e-5)


def test_pb_relax_stays_finite_in_fp16_where_plain_overflows() -> None:
    torch.manual_seed(0)
    # Deep-layer hidden states reach 1e3-1e4: their squares overflow fp16 (max 65504).
    x32 = torch.randn(4, 64) * 2000
    w, b = torch.ones(64), torch.zeros(64)
    x16 = x32.half()
    ref = F.layer_norm(x16.float(), (64,), w, b, 1e-5)
    xc = x16 - x16.mean(-1, keepdim=True)
    assert torch.isinf((xc * xc).mean(-1)).all()  # the fp16 variance overflows ...
    plain = layer_norm_in_dtype(x16, w.half(), b.half(), 1e-5)
    assert (plain.float() - ref).abs().max() > 1  # ... and the plain LayerNorm collapses to 0
    out = pb_relax_layer_norm(x16, w.half(), b.half(), 1e-5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, atol=1e-2, rtol=1e-2)

    # Attention logits beyond 65504: Q.K over 64 dims of |q|,|k| ~ 300.
    q = torch.randn(1, 2, 6, 64) * 300
    k = q + torch.randn_like(q)
    v = torch.randn(1, 2, 6, 64)
    mask = torch.ones(6, 6, dtype=torch.bool).tril()
    ref = relaxed_attention(q, k, v, mask)
    assert not torch.isfinite(standard_attention(q.half(), k.half(), v.half(), mask)).all()
    out = relaxed_attention(q.half(), k.half(), v.half(), mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)
    assert math.isfinite(float(out.abs().max()))
