"""Autoregressive filling of CogView templates (spec §4.3), batched across requests.

A batch is one template per row: a per-row prefix (everything up to the text-dependent part)
followed by a suffix of L columns shared in layout: -1 marks a token to sample, >= 0 a given
token (the same columns are holes in every row, the given values may differ). Given tokens
between holes are fed together with the next step, as CogView does.

Decoders (same results, different cost):
- `KVDecoder`: a real per-layer K/V cache. Each distinct prefix is prefilled once at batch 1 and
  copied (left-padded) into the batch cache, so identical prompts share the work.
- `MemsDecoder`: the original scheme: per-layer input hidden states ("mems"); every step
  recomputes input LayerNorm and QKV over the whole prefix. Kept as the benchmark baseline.
- `FullDecoder`: a full causal forward over the sequence at every step (test oracle).

Randomness: each row draws its uniforms from its own CPU `torch.Generator` up front and samples
by inverse CDF, so a row's tokens depend on its seed and its logits only, never on batch mates.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Protocol

import torch
from torch import Tensor

from models.cogview.config import CogViewConfig
from models.cogview.transformer import CogViewTransformer, KVCache, causal_mask

START, IMAGE, TEXT = 0, 1, 2


def positions_for(tokens: Sequence[int], cfg: CogViewConfig) -> list[int]:
    """0..n-1, restarting at 0 on the first [ROI2] (CogView's SR finetune), clipped to the table.

    CogView's sampler keeps [ROI2] at its absolute index and numbers what follows 1, 2, ...; the
    finetune it was trained with put [ROI2] at 0. We follow training so [ROI2] sees the position
    it learned; the tokens after it are numbered identically either way.
    """
    roi2, out, p = cfg.cmd("[ROI2]"), [], 0
    seen = False
    for t in tokens:
        if t == roi2 and not seen:
            p, seen = 0, True
        out.append(min(p, cfg.max_positions - 1))
        p += 1
    return out


def validity_table(cfg: CogViewConfig) -> Tensor:
    """(3, V) bool: tokens allowed in the START / IMAGE / TEXT states (spec §4.3)."""
    v, n_img, cmd = cfg.vocab_size, cfg.n_image, cfg.command_base
    table = torch.zeros(3, v, dtype=torch.bool)
    table[START, n_img : cfg.n_real_tokens] = True  # no image ids before a [BOI]
    table[IMAGE, :n_img] = True  # inside an image: image ids only
    table[TEXT, n_img:cmd] = True  # after an [EOI]: text only, no commands or padding
    return table


class StateTracker:
    """Per-row validity state and next position, updated by every token that enters a row."""

    def __init__(self, cfg: CogViewConfig, prefixes: Sequence[Sequence[int]], device: torch.device) -> None:
        self.cfg = cfg
        self.boi = torch.tensor([cfg.cmd("[BOI1]"), cfg.cmd("[BOI2]")], device=device)
        self.eoi = torch.tensor([cfg.cmd("[EOI1]"), cfg.cmd("[EOI2]")], device=device)
        self.roi2 = cfg.cmd("[ROI2]")
        boi, eoi = {cfg.cmd("[BOI1]"), cfg.cmd("[BOI2]")}, {cfg.cmd("[EOI1]"), cfg.cmd("[EOI2]")}
        state, pos, reset = [], [], []
        for p in prefixes:
            s = START
            for t in p:
                s = IMAGE if int(t) in boi else TEXT if int(t) in eoi else s
            state.append(s)
            pos.append(positions_for(p, cfg)[-1] + 1 if len(p) else 0)
            reset.append(self.roi2 in p)
        self.state = torch.tensor(state, device=device)
        self.next_pos = torch.tensor(pos, device=device)
        self.reset_done = torch.tensor(reset, device=device)

    def advance(self, tokens: Tensor, rows: Tensor) -> Tensor:
        """tokens (R, T) entering `rows`; returns their positions (R, T) and updates the state."""
        positions = torch.empty_like(tokens)
        nxt, done, state = self.next_pos[rows], self.reset_done[rows], self.state[rows]
        for j in range(tokens.shape[1]):
            t = tokens[:, j]
            is_reset = (t == self.roi2) & ~done
            p = torch.where(is_reset, torch.zeros_like(nxt), nxt)
            positions[:, j] = p.clamp_max(self.cfg.max_positions - 1)
            nxt, done = p + 1, done | is_reset
            state = torch.where(torch.isin(t, self.boi), IMAGE, torch.where(torch.isin(t, self.eoi), TEXT, state))
        self.next_pos[rows], self.reset_done[rows], self.state[rows] = nxt, done, state
        return positions


def sample_next(logits: Tensor, allowed: Tensor, u: Tensor, top_k: int, temperature: float) -> Tensor:
    """CogView's step: /T, forbid invalid ids, top-k, softmax, draw (by inverse CDF with u)."""
    x = logits.float() / temperature
    x = x.masked_fill(~allowed, float("-inf"))
    if 0 < top_k < x.shape[-1]:
        kth = x.topk(top_k, dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    cdf = torch.softmax(x, dim=-1).cumsum(-1)
    # right=True lands on the first id whose cumulative mass exceeds u: never a zero-mass id.
    idx = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1).contiguous(), right=True)
    return idx.squeeze(-1).clamp_max(x.shape[-1] - 1)


class Decoder(Protocol):
    """prefill / feed return the last position's hidden state (B, D), before the final LN."""

    def prefill(self, prefixes: Sequence[Sequence[int]], total: int) -> Tensor: ...
    def feed(self, tokens: Tensor, positions: Tensor) -> Tensor: ...
    def select(self, rows: Tensor) -> None: ...


def _left_pad(
    model: CogViewTransformer, prefixes: Sequence[Sequence[int]], device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    n = max(len(p) for p in prefixes)
    tok = torch.zeros(len(prefixes), n, dtype=torch.long)
    pos = torch.zeros_like(tok)
    valid = torch.zeros(len(prefixes), n, dtype=torch.bool)
    for i, p in enumerate(prefixes):
        tok[i, n - len(p) :] = torch.tensor(list(p))
        pos[i, n - len(p) :] = torch.tensor(positions_for(p, model.cfg))
        valid[i, n - len(p) :] = True
    return tok.to(device), pos.to(device), valid.to(device)


class KVDecoder:
    def __init__(self, model: CogViewTransformer) -> None:
        self.model = model
        self.cache: KVCache | None = None

    def prefill(self, prefixes: Sequence[Sequence[int]], total: int) -> Tensor:
        m = self.model
        dev, dtype = m.word_embeddings.weight.device, m.word_embeddings.weight.dtype
        n = max(len(p) for p in prefixes)
        cache = KVCache(m.cfg, len(prefixes), n + total, dtype, dev)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, p in enumerate(prefixes):
            groups.setdefault(tuple(int(t) for t in p), []).append(i)
        hidden = torch.empty(len(prefixes), m.cfg.hidden_size, dtype=dtype, device=dev)
        for p, rows in groups.items():
            one = KVCache(m.cfg, 1, len(p), dtype, dev)
            tok = torch.tensor([p], device=dev)
            pos = torch.tensor([positions_for(p, m.cfg)], device=dev)
            out = m(tok, pos, cache=one, last_only=True, return_hidden=True)[:, -1]
            r = torch.tensor(rows, device=dev)
            # Expand the batch-1 prefill to every row with this prompt, right-aligned.
            cache.k[:, r, :, n - len(p) : n] = one.k
            cache.v[:, r, :, n - len(p) : n] = one.v
            cache.valid[r, : n - len(p)] = False
            hidden[r] = out
        cache.padded = bool((~cache.valid[:, :n]).any())
        cache.length = n
        self.cache = cache
        return hidden

    def feed(self, tokens: Tensor, positions: Tensor) -> Tensor:
        return self.model(tokens, positions, cache=self.cache, last_only=True, return_hidden=True)[:, -1]

    def select(self, rows: Tensor) -> None:
        assert self.cache is not None
        self.cache.select(rows)


class FullDecoder:
    def __init__(self, model: CogViewTransformer) -> None:
        self.model = model

    def _run(self) -> Tensor:
        kv = self.valid if not bool(self.valid.all()) else None
        return self.model(self.tok, self.pos, key_valid=kv, last_only=True, return_hidden=True)[:, -1]

    def prefill(self, prefixes: Sequence[Sequence[int]], total: int) -> Tensor:
        self.tok, self.pos, self.valid = _left_pad(self.model, prefixes, self.model.word_embeddings.weight.device)
        return self._run()

    def feed(self, tokens: Tensor, positions: Tensor) -> Tensor:
        self.tok = torch.cat([self.tok, tokens], 1)
        self.pos = torch.cat([self.pos, positions], 1)
        self.valid = torch.cat([self.valid, torch.ones_like(tokens, dtype=torch.bool)], 1)
        return self._run()

    def select(self, rows: Tensor) -> None:
        self.tok, self.pos, self.valid = self.tok[rows], self.pos[rows], self.valid[rows]


class MemsDecoder:
    """CogView's original decoding: cache layer inputs, recompute LN1 + QKV over them each step."""

    def __init__(self, model: CogViewTransformer) -> None:
        self.model = model
        self.mems: list[Tensor] = []

    def _step(self, tokens: Tensor, positions: Tensor, valid_new: Tensor) -> Tensor:
        m = self.model
        x = m.embed(tokens, positions)
        t = x.shape[1]
        self.valid = torch.cat([self.valid, valid_new], 1) if self.mems else valid_new
        s = self.valid.shape[1]
        mask = causal_mask(t, s, x.device) & self.valid[:, None, None, :]
        mask |= torch.zeros(t, s, dtype=torch.bool, device=x.device).diagonal_scatter(
            torch.ones(t, dtype=torch.bool, device=x.device), s - t
        )
        new_mems = []
        for i, layer in enumerate(m.transformer.layers):
            full = torch.cat([self.mems[i], x], 1) if self.mems else x
            new_mems.append(full)
            q, k, v = layer.attention.project(layer.input_layernorm(full))
            x = layer.finish(x, layer.attention.attend(q[:, :, -t:], k, v, mask, False))
        self.mems = new_mems
        return x[:, -1]

    def prefill(self, prefixes: Sequence[Sequence[int]], total: int) -> Tensor:
        tok, pos, valid = _left_pad(self.model, prefixes, self.model.word_embeddings.weight.device)
        self.mems = []
        return self._step(tok, pos, valid)

    def feed(self, tokens: Tensor, positions: Tensor) -> Tensor:
        return self._step(tokens, positions, torch.ones_like(tokens, dtype=torch.bool))

    def select(self, rows: Tensor) -> None:
        self.mems = [h[rows] for h in self.mems]
        self.valid = self.valid[rows]


DECODERS: dict[str, Callable[[CogViewTransformer], Decoder]] = {
    "kv": KVDecoder,
    "mems": MemsDecoder,
    "full": FullDecoder,
}

# Called after each sampled column with the number sampled so far; returns rows to stop.
TokenCallback = Callable[[int], Collection[int] | None]


@torch.no_grad()
def fill(
    model: CogViewTransformer,
    prefixes: Sequence[Sequence[int]],
    suffix: Tensor,
    generators: Sequence[torch.Generator],
    *,
    top_k: int,
    temperature: float,
    allowed_extra: Tensor | None = None,
    decoder: str = "kv",
    on_token: TokenCallback | None = None,
) -> tuple[Tensor, Tensor]:
    """Fill the holes (-1) of `suffix` (B, L). Returns (filled suffix on CPU, stopped (B,) bool)."""
    b, length = suffix.shape
    if len(prefixes) != b or len(generators) != b or any(len(p) == 0 for p in prefixes):
        raise ValueError("fill needs one non-empty prefix and one generator per row")
    holes = suffix[0] < 0
    if not bool(((suffix < 0) == holes).all()):
        raise ValueError("the rows of a batch must have their holes at the same columns")
    dev = model.word_embeddings.weight.device
    n_holes = int(holes.sum())
    # Draw every uniform up front from the row's own generator: no CPU work per step, and a
    # row's randomness cannot depend on its batch mates.
    u = torch.stack([torch.rand(n_holes, generator=g, dtype=torch.float64) for g in generators])
    u = u.float().to(dev)
    table = validity_table(model.cfg).to(dev)
    boi = {model.cfg.cmd("[BOI1]"), model.cfg.cmd("[BOI2]")}
    eoi = {model.cfg.cmd("[EOI1]"), model.cfg.cmd("[EOI2]")}
    if allowed_extra is not None:
        table = table & allowed_extra.to(dev)
    out = suffix.clone().to(dev)
    tracker = StateTracker(model.cfg, prefixes, dev)
    # The same states on the host, to pick the head's vocabulary slice without a device sync.
    # Sampling in IMAGE or TEXT state cannot emit [BOI]/[EOI], so only given tokens change them.
    host = tracker.state.tolist()
    cfg = model.cfg
    ranges = {IMAGE: (0, cfg.n_image), TEXT: (cfg.n_image, cfg.command_base)}
    dec = DECODERS[decoder](model)
    hidden = dec.prefill(prefixes, length)
    alive = torch.arange(b, device=dev)
    alive_rows = list(range(b))
    stopped = torch.zeros(b, dtype=torch.bool)
    pending: list[int] = []
    h = 0
    for j in range(length):
        if bool(holes[j]):
            if pending:
                cols = torch.tensor(pending, device=dev)
                tok = out[alive][:, cols]
                hidden = dec.feed(tok, tracker.advance(tok, alive))
                pending = []
            states = {host[r] for r in alive_rows}
            lo, hi = ranges.get(states.pop(), (0, cfg.vocab_size)) if len(states) == 1 else (0, cfg.vocab_size)
            logits = model.head(hidden, lo, hi).float()
            allowed = table[tracker.state[alive]][:, lo:hi]
            out[alive, j] = sample_next(logits, allowed, u[alive, h], top_k, temperature) + lo
            for r in alive_rows:
                if host[r] not in ranges:
                    host[r] = -1  # a sample in START state may be a command: state unknown on the host
            h += 1
            stop = on_token(h) if on_token is not None else None
            if stop:
                keep = [k for k, r in enumerate(alive.tolist()) if r not in set(stop)]
                for r in stop:
                    stopped[r] = True
                if not keep:
                    break
                sel = torch.tensor(keep, device=dev)
                dec.select(sel)
                hidden, alive = hidden[sel], alive[sel]
                alive_rows = [alive_rows[k] for k in keep]
        else:
            for r in alive_rows:
                t = int(suffix[r, j])
                host[r] = IMAGE if t in boi else TEXT if t in eoi else host[r]
        pending.append(j)
    return out.cpu(), stopped
