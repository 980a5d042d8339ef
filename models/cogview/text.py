"""CogView's text tokenizers, mapped into the unified id space (text id = n_image_codes + id).

- `SentencePieceText`: the released `cog-pretrain.model` (BPE, 50000 pieces, nmt_nfkc). Like
  CogView, no BOS/EOS are added: the command tokens frame the text (spec §3).
- `ByteText`: UTF-8 bytes (256 ids) for small models, so Chinese and English prompts work
  without a vocabulary file. Chinese characters take 3 ids each.
"""

from __future__ import annotations

import os
from typing import Protocol

import torch


class TextTokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        """Tokenizer ids in [0, vocab_size), not yet offset into the unified space."""
        ...

    def decode(self, ids: list[int]) -> str: ...

    def language_mask(self, language: str) -> torch.Tensor:
        """(vocab_size,) bool: ids allowed when captioning in `language` ('en' or 'zh')."""
        ...


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return 0x2E80 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF or 0xFF00 <= o <= 0xFFEF or 0x3000 <= o <= 0x303F


class ByteText:
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        # A sampled byte string need not be valid UTF-8; drop broken sequences rather than fail.
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="ignore")

    def language_mask(self, language: str) -> torch.Tensor:
        allowed = torch.zeros(256, dtype=torch.bool)
        allowed[32:127] = True  # printable ASCII: English text and the punctuation both use
        if language == "zh":
            # Chinese needs the UTF-8 lead (0xE0-0xEF) and continuation (0x80-0xBF) bytes; Latin
            # letters are left out (as for SentencePiece pieces) so the caption cannot drift into
            # English, while digits and punctuation stay.
            allowed[0x80:0xC0] = True
            allowed[0xE0:0xF0] = True
            for c in range(ord("A"), ord("z") + 1):
                allowed[c] = not chr(c).isalpha()
        elif language != "en":
            raise ValueError(f"language must be 'en' or 'zh', not {language!r}")
        return allowed


class SentencePieceText:
    def __init__(self, model_file: str | os.PathLike[str]) -> None:
        try:
            import sentencepiece as spm
        except ImportError as e:  # optional dependency: fluxgate[text]
            raise ImportError("the CogView SentencePiece tokenizer needs `pip install sentencepiece`") from e
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.vocab_size = int(self.sp.get_piece_size())
        self._masks: dict[str, torch.Tensor] = {}

    def encode(self, text: str) -> list[int]:
        return list(self.sp.encode(text, out_type=int))

    def decode(self, ids: list[int]) -> str:
        return str(self.sp.decode([i for i in ids if 0 <= i < self.vocab_size]))

    def language_mask(self, language: str) -> torch.Tensor:
        if language not in ("en", "zh"):
            raise ValueError(f"language must be 'en' or 'zh', not {language!r}")
        if language not in self._masks:
            # Classify pieces once by script: 'zh' keeps pieces with CJK characters (plus digits
            # and punctuation), 'en' keeps pieces without any.
            allowed = torch.zeros(self.vocab_size, dtype=torch.bool)
            for i in range(self.vocab_size):
                if self.sp.is_control(i) or self.sp.is_unknown(i):
                    continue
                piece = self.sp.id_to_piece(i).replace("\u2581", " ")
                has_cjk = any(_is_cjk(c) for c in piece)
                has_latin = any(c.isascii() and c.isalpha() for c in piece)
                allowed[i] = has_cjk or not has_latin if language == "zh" else not has_cjk
            self._masks[language] = allowed
        return self._masks[language]


def make_text_tokenizer(kind: str, model_file: str | os.PathLike[str] | None = None) -> TextTokenizer:
    if kind == "bytes":
        return ByteText()
    if kind == "sentencepiece":
        if model_file is None:
            raise ValueError("the SentencePiece tokenizer needs checkpoints['tokenizer'] (cog-pretrain.model)")
        return SentencePieceText(model_file)
    raise ValueError(f"unknown text tokenizer {kind!r}")
