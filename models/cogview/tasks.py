"""CogView's task templates on token ids (spec §1.5, §5.1, §5.2).

    text-to-image      [ROI1] text [BASE] [BOI1] <image>
    captioning         [BASE] [BOI1] image [EOI1] [ROI1] <text>
    post-selection     [BASE] [BOI1] image [EOI1] [ROI1] text          (scored, not sampled)
    super-resolution   [ROI1] text [BASE] [BOI1] low [EOI1] [ROI2] [POS0] [BASE] [BOI2] <high>

([BASE] is the config's size token.) Everything here works on unified ids and code grids; the
pipeline adds pixels and strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from models.cogview.config import CogViewConfig
from models.cogview.sampling import TokenCallback, fill, positions_for
from models.cogview.transformer import CogViewTransformer


def t2i_prefix(cfg: CogViewConfig, text: Sequence[int]) -> list[int]:
    """text: unified text ids (tokenizer id + n_image), already truncated."""
    return [cfg.cmd("[ROI1]"), *text, cfg.cmd(cfg.size_token), cfg.cmd("[BOI1]")]


def sr_prefix(cfg: CogViewConfig, text: Sequence[int]) -> list[int]:
    """The super-resolution prefix: text-to-image's, with the text padded to cfg.sr_text_tokens
    (byte-level text: the space byte) when the config asks for it."""
    n = cfg.sr_text_tokens
    if n:
        text = [*text[:n], *[cfg.n_image + ord(" ")] * max(0, n - len(text))]
    return t2i_prefix(cfg, text)


def caption_prefix(cfg: CogViewConfig, codes: Sequence[int]) -> list[int]:
    return [cfg.cmd(cfg.size_token), cfg.cmd("[BOI1]"), *codes, cfg.cmd("[EOI1]"), cfg.cmd("[ROI1]")]


# Post-selection --------------------------------------------------------------------------
@torch.no_grad()
def caption_scores(
    model: CogViewTransformer, codes: Tensor, text: Sequence[int], max_batch: int | None = None
) -> Tensor:
    """Summed log p(text | image) for each image's codes (N, n): CogView's inverse_prompt_score.

    Higher is better; CapLoss = -score / len(text). Image ids are masked out before the softmax,
    as upstream does, since the text position can never hold one.
    """
    cfg = model.cfg
    if not text:
        raise ValueError("cannot score an empty caption")
    dev = model.word_embeddings.weight.device
    seqs = [caption_prefix(cfg, c.tolist()) + list(text) for c in codes]
    r = len(seqs[0]) - len(text) - 1  # index of [ROI1]
    tok = torch.tensor(seqs, device=dev)
    pos = torch.tensor([positions_for(seqs[0], cfg)] * len(seqs), device=dev)
    out = []
    step = max_batch or cfg.max_batch
    for i in range(0, len(seqs), step):
        logits = model(tok[i : i + step], pos[i : i + step])[:, r:-1].float()
        logits[..., : cfg.n_image] = float("-inf")
        lp = torch.log_softmax(logits, -1).gather(-1, tok[i : i + step, r + 1 :, None]).squeeze(-1)
        out.append(lp.sum(-1))
    return torch.cat(out).cpu()


def cap_loss(scores: Tensor, n_text: int) -> Tensor:
    """Per-token mean cross-entropy of the caption (the paper's CapLoss; lower is better)."""
    return -scores / n_text


def rerank_order(scores: Tensor) -> list[int]:
    """Indices from best (highest log-likelihood) to worst; ties keep the input order."""
    return sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))


# Training (used by tests and demo training scripts) ---------------------------------------
def sequence_loss(model: CogViewTransformer, seqs: Tensor, txt_loss_scale: float = 1.0) -> Tensor:
    """CogView's LM loss on full sequences (B, S): next-token CE, text/command inputs weighted."""
    cfg = model.cfg
    pos = torch.tensor([positions_for(s.tolist(), cfg) for s in seqs], device=seqs.device)
    logits = model(seqs[:, :-1], pos[:, :-1]).float()
    ce = F.cross_entropy(logits.transpose(1, 2), seqs[:, 1:], reduction="none")
    inp, pad = seqs[:, :-1], cfg.cmd("[PAD]")
    # Padding neither predicts nor is predicted (CogView's loss_mask).
    w = torch.where(inp >= cfg.n_image, txt_loss_scale, 1.0) * (inp != pad) * (seqs[:, 1:] != pad)
    return (ce * w).sum() / w.sum()


# Super-resolution ------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    i: int
    j: int
    line: int  # rows of the high-res window generated here (the rest is left to the next row)
    low: tuple[slice, slice]
    high: tuple[slice, slice]


# CogView's centre-continuous order and row counts for a 32-row window (magnify.py).
_ORDER = ((0, 0, 18), (0, 1, 30), (0, 2, 30), (1, 1, 30), (1, 0, 30), (1, 2, 30), (2, 0, 32), (2, 1, 32), (2, 2, 32))


def sr_windows(grid: int) -> list[Window]:
    """Windows that magnify a grid x grid code map to 2grid x 2grid (32 -> 64 in the release).

    Low-res windows are grid/2 wide at stride grid/4; high-res ones grid wide at stride grid/2.
    Row counts scale with the window (18/32 and 30/32 of it, rounded down).
    """
    if grid % 4:
        raise ValueError(f"super-resolution needs a code grid divisible by 4, got {grid}")
    lw, ls, hw, hs = grid // 2, grid // 4, grid, grid // 2
    lines = {18: hw * 18 // 32, 30: hw * 30 // 32, 32: hw}
    return [
        Window(
            i, j, lines[n],
            (slice(ls * i, ls * i + lw), slice(ls * j, ls * j + lw)),
            (slice(hs * i, hs * i + lines[n]), slice(hs * j, hs * j + hw)),
        )
        for i, j, n in _ORDER
    ]  # fmt: skip


def sr_middle(cfg: CogViewConfig) -> list[int]:
    return [cfg.cmd(n) for n in ("[EOI1]", "[ROI2]", "[POS0]", cfg.size_token, "[BOI2]")]


def super_resolve(
    model: CogViewTransformer,
    prefixes: Sequence[Sequence[int]],
    low: Tensor,
    generators: Sequence[torch.Generator],
    *,
    top_k: int,
    temperature: float,
    on_token: TokenCallback | None = None,
    decoder: str = "kv",
) -> tuple[Tensor, Tensor]:
    """low (B, G, G) codes -> (high (B, 2G, 2G) codes, stopped (B,)), window by window.

    Tokens already produced by an earlier window are given context in later ones, so every
    high-res token is sampled exactly once. on_token counts across all windows.
    """
    b, g, _ = low.shape
    cfg = model.cfg
    high = torch.full((b, 2 * g, 2 * g), -1, dtype=torch.long)
    middle = torch.tensor(sr_middle(cfg)).expand(b, -1)
    stopped = torch.zeros(b, dtype=torch.bool)
    alive = list(range(b))
    done = 0
    for w in sr_windows(g):
        target = high[alive][:, w.high[0], w.high[1]].reshape(len(alive), -1)
        low_w = low[alive][:, w.low[0], w.low[1]].reshape(len(alive), -1)
        suffix = torch.cat([low_w, middle[: len(alive)], target], 1)
        base = done

        def cb(n: int, base: int = base, rows: list[int] = alive) -> list[int] | None:
            stop = on_token(base + n) if on_token is not None else None
            return [rows.index(r) for r in stop if r in rows] if stop else None

        filled, stop_w = fill(
            model, [prefixes[r] for r in alive], suffix, [generators[r] for r in alive],
            top_k=top_k, temperature=temperature, on_token=cb, decoder=decoder,
        )  # fmt: skip
        done += int((target[0] < 0).sum())
        gen = filled[:, low_w.shape[1] + middle.shape[1] :].reshape(len(alive), w.line, -1)
        keep = []
        for k, r in enumerate(alive):
            if stop_w[k]:
                stopped[r] = True
            else:
                high[r, w.high[0], w.high[1]] = gen[k]
                keep.append(r)
        alive = keep
        if not alive:
            break
    return high, stopped
