"""CogView tasks: SR window schedule, caption scoring on a model trained here, text tokenizers."""

from __future__ import annotations

import io

import pytest
import torch

import models.cogview.tasks as tasks
from models.cogview.config import CogViewConfig, VQVAEConfig
from models.cogview.tasks import (
    cap_loss,
    caption_prefix,
    caption_scores,
    rerank_order,
    sequence_loss,
    sr_windows,
    super_resolve,
    t2i_prefix,
)
from models.cogview.text import ByteText, SentencePieceText
from models.cogview.transformer import CogViewTransformer


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models gain nothing from intra-op threads, and on a shared, loaded CPU every parallel
    # region waits for a busy core: one thread runs these tests ~10x faster there.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(grid: int = 4, **kw) -> CogViewConfig:
    return CogViewConfig(
        num_layers=2,
        hidden_size=64,
        num_heads=4,
        max_positions=96,
        text_vocab=256,
        text_tokenizer="bytes",
        image_grid=grid,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        vqvae=VQVAEConfig(channels=16, embed_dim=8, n_codes=64),
        **kw,
    )


def test_published_sr_windows() -> None:
    ws = sr_windows(32)
    assert [(w.i, w.j, w.line) for w in ws] == [
        (0, 0, 18),
        (0, 1, 30),
        (0, 2, 30),
        (1, 1, 30),
        (1, 0, 30),
        (1, 2, 30),
        (2, 0, 32),
        (2, 1, 32),
        (2, 2, 32),
    ]
    w = ws[3]  # (1, 1)
    assert (w.low[0].start, w.low[0].stop, w.low[1].start, w.low[1].stop) == (8, 24, 8, 24)
    assert (w.high[0].start, w.high[0].stop, w.high[1].start, w.high[1].stop) == (16, 46, 16, 48)
    assert [w.line for w in sr_windows(8)] == [4, 7, 7, 7, 7, 7, 8, 8, 8]


@pytest.mark.parametrize("grid", [8, 16, 32])
def test_sr_windows_make_every_token_exactly_once(grid: int) -> None:
    order = torch.full((2 * grid, 2 * grid), -1, dtype=torch.long)
    step = 0
    for w in sr_windows(grid):
        assert w.low[0].stop <= grid and w.low[1].stop <= grid
        for r in range(w.high[0].start, w.high[0].stop):
            for c in range(w.high[1].start, w.high[1].stop):
                if order[r, c] < 0:
                    order[r, c] = step
                    step += 1
    assert step == (2 * grid) ** 2 and (order >= 0).all()  # full coverage, each token once
    assert order[0, 0] == 0 and order[0, grid - 1] == grid - 1  # window (0,0) first, raster inside


def test_super_resolve_samples_each_token_once_in_window_order(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny(grid=8)
    torch.manual_seed(0)
    m = CogViewTransformer(cfg).eval()
    m.init_weights()
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_fill = tasks.fill

    def spy(*args, **kw):
        out = real_fill(*args, **kw)
        calls.append((args[2].clone(), out[0].clone()))
        return out

    monkeypatch.setattr(tasks, "fill", spy)
    low = torch.randint(0, 64, (2, 8, 8))
    prefixes = [t2i_prefix(cfg, [70, 71]), t2i_prefix(cfg, [72])]
    counted: list[int] = []
    high, stopped = super_resolve(
        m,
        prefixes,
        low,
        [torch.Generator().manual_seed(s) for s in (0, 1)],
        top_k=20,
        temperature=1.02,
        on_token=lambda n: counted.append(n),
    )
    assert not stopped.any() and (high >= 0).all() and (high < cfg.n_image).all()
    assert counted == list(range(1, 16 * 16 + 1))  # every high-res token sampled once
    n_low, n_mid = 16, 5
    for w, (suffix, filled) in zip(sr_windows(8), calls, strict=True):
        assert torch.equal(suffix[:, :n_low], low[:, w.low[0], w.low[1]].reshape(2, -1))
        mid = [cfg.cmd(t) for t in ("[EOI1]", "[ROI2]", "[POS0]", cfg.size_token, "[BOI2]")]
        assert suffix[0, n_low : n_low + n_mid].tolist() == mid
        # What this window made (holes) and was given both equal the final map.
        assert torch.equal(filled[:, n_low + n_mid :].reshape(2, w.line, -1), high[:, w.high[0], w.high[1]])


def _train_captioner() -> tuple[CogViewTransformer, torch.Tensor, list[list[int]]]:
    cfg = tiny()
    torch.manual_seed(0)
    m = CogViewTransformer(cfg)
    m.init_weights()
    codes = torch.randint(0, 64, (4, 16))
    captions = ["red circle", "blue square", "green star", "一只猫"]
    texts = [[b + cfg.n_image for b in c.encode()] for c in captions]
    n = max(len(t) for t in texts)
    pad = cfg.cmd("[PAD]")
    rows = [caption_prefix(cfg, c.tolist()) + t + [pad] * (n - len(t)) for c, t in zip(codes, texts, strict=True)]
    seqs = torch.tensor(rows)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(120):
        loss = sequence_loss(m, seqs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval(), codes, texts


def test_caption_score_ranks_true_caption_first() -> None:
    m, codes, texts = _train_captioner()
    scores = torch.stack([caption_scores(m, codes, t) for t in texts])  # (caption, image)
    for i in range(4):
        assert rerank_order(scores[i])[0] == i  # each caption picks its own image
        losses = torch.stack([cap_loss(scores[j, i : i + 1], len(texts[j])) for j in range(4)]).squeeze(1)
        assert int(losses.argmin()) == i  # and each image prefers its own caption (CapLoss)
    assert torch.allclose(cap_loss(scores[0], len(texts[0])), -scores[0] / len(texts[0]))
    assert (scores <= 0).all()


def test_byte_text_handles_chinese_and_english() -> None:
    t = ByteText()
    for s in ("a red circle", "一个红色的圆", "mixed 中文 text"):
        assert t.decode(t.encode(s)) == s
    assert len(t.encode("猫")) == 3
    assert t.decode([0xE7, 0x8C]) == ""  # a cut-off character is dropped, not an error
    en, zh = t.language_mask("en"), t.language_mask("zh")
    assert en[ord("a")] and not en[0xE7] and zh[0xE7] and not zh[ord("a")] and zh[ord("1")] and zh[ord(",")]


def test_sentencepiece_text(tmp_path) -> None:
    spm = pytest.importorskip("sentencepiece")
    lines = [
        "一只红色的猫坐在桌子上",
        "a red cat on the table",
        "蓝色的天空和白色的云",
        "blue sky and white clouds",
    ] * 20
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        vocab_size=80,
        model_type="bpe",
        character_coverage=1.0,
        normalization_rule_name="nmt_nfkc",
    )
    path = tmp_path / "tiny.model"
    path.write_bytes(buf.getvalue())
    t = SentencePieceText(path)
    assert t.vocab_size == 80
    ids = t.encode("a red cat")
    assert ids and all(0 <= i < 80 for i in ids) and t.decode(ids) == "a red cat"
    assert t.decode(t.encode("红色的猫")) == "红色的猫"
    zh, en = t.language_mask("zh"), t.language_mask("en")
    cat = t.encode("猫")[-1]
    assert zh[cat] and not en[cat]


def test_super_resolution_prompts_are_padded_only_where_the_config_says() -> None:
    from models.cogview.presets import get_config
    from models.cogview.tasks import sr_prefix

    demo, released = get_config("demo-cogview"), get_config("cogview-4b")
    short, long = [demo.n_image + 97] * 3, [demo.n_image + 97] * 40
    assert len(sr_prefix(demo, short)) == len(sr_prefix(demo, long)) == 1 + demo.sr_text_tokens + 2
    assert sr_prefix(released, [released.n_image + 5] * 3) == t2i_prefix(released, [released.n_image + 5] * 3)
