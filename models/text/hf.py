"""Text encoders for the published FLUX models, through `transformers`, from local folders only.

- FLUX.1: T5 (`last_hidden_state`, padded to max_length, **no attention mask**, so the padding
  is encoded too, as BFL and diffusers do) + CLIP-L (`pooler_output`, 77 tokens) (spec §5).
- FLUX.2 klein: Qwen3, one user turn through the chat template with the generation prompt and
  thinking disabled, padded to 512 with the attention mask; hidden states of layers 9, 18, 27
  concatenated per token, layer-major: "b c l d -> b l (c d)" (spec §10.5).
- FLUX.2-dev: Mistral 3 Small, system + user turns, layers 10, 20, 30 (same stacking).

A folder may be a diffusers model repository (text_encoder[_2]/, tokenizer[_2]/) or hold the
model and tokenizer files directly. `transformers` is imported lazily: it is an optional extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from einops import rearrange

from models.text.base import TextEmbeddings


def _first_dir(root: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (root / name / "config.json").is_file() or (name == "" and (root / "config.json").is_file()):
            return root / name if name else root
    return None


def _tokenizer_dir(root: Path, model_dir: Path, names: Sequence[str]) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return model_dir


class T5ClipEncoder:
    """FLUX.1 text conditioning: T5 token features (B, max_length, 4096) + CLIP pooled (B, 768)."""

    def __init__(self, t5: Any, t5_tokenizer: Any, clip: Any, clip_tokenizer: Any, max_length: int,
                 device: torch.device):
        self.t5, self.t5_tokenizer = t5, t5_tokenizer
        self.clip, self.clip_tokenizer = clip, clip_tokenizer
        self.max_length = max_length
        self.device = device

    @torch.inference_mode()
    def encode(self, prompts: Sequence[str]) -> TextEmbeddings:
        t5_ids = self.t5_tokenizer(list(prompts), padding="max_length", max_length=self.max_length, truncation=True,
                                   return_tensors="pt").input_ids.to(self.device)
        tokens = self.t5(input_ids=t5_ids, attention_mask=None).last_hidden_state  # (B, L, D_t5)
        clip_ids = self.clip_tokenizer(list(prompts), padding="max_length", max_length=77, truncation=True,
                                       return_tensors="pt").input_ids.to(self.device)
        pooled = self.clip(input_ids=clip_ids, attention_mask=None).pooler_output  # (B, D_clip)
        return TextEmbeddings(tokens=tokens, pooled=pooled)


# FLUX.2-dev's system turn (BFL flux2 system_messages.py; the newline is part of it).
MISTRAL_SYSTEM_MESSAGE = (
    "You are an AI that reasons about image descriptions. You give structured responses focusing on object "
    "relationships, object\nattribution and actions without speculation."
)


class ChatHiddenStatesEncoder:
    """FLUX.2 text conditioning from a chat LLM's intermediate hidden states.

    Qwen3 (klein): one user turn, generation prompt on, thinking off. Mistral 3 (FLUX.2-dev): a
    system turn then the user turn, content as typed parts, no generation prompt (spec §10.5).
    """

    def __init__(self, model: Any, tokenizer: Any, layers: Sequence[int], max_length: int, device: torch.device,
                 system_message: str | None = None, templater: Any = None):
        self.model, self.tokenizer = model, tokenizer
        self.templater = templater if templater is not None else tokenizer  # a processor may hold the template
        self.layers = tuple(layers)
        self.max_length = max_length
        self.device = device
        self.system_message = system_message

    def _template(self, prompt: str) -> str:
        if self.system_message is None:
            messages = [{"role": "user", "content": prompt}]
            return self.templater.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                      enable_thinking=False)
        messages = [
            {"role": "system", "content": [{"type": "text", "text": self.system_message}]},
            {"role": "user", "content": [{"type": "text", "text": prompt}]},
        ]
        return self.templater.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)

    @torch.inference_mode()
    def encode(self, prompts: Sequence[str]) -> TextEmbeddings:
        texts = [self._template(p) for p in prompts]
        # The rendered template already holds BOS and the control tokens.
        kw = {"add_special_tokens": False} if self.system_message is not None else {}
        batch = self.tokenizer(texts, padding="max_length", max_length=self.max_length, truncation=True,
                               return_tensors="pt", **kw)
        out = self.model(input_ids=batch["input_ids"].to(self.device),
                         attention_mask=batch["attention_mask"].to(self.device),
                         output_hidden_states=True, use_cache=False)
        stacked = torch.stack([out.hidden_states[k] for k in self.layers], dim=1)  # (B, C, L, D)
        return TextEmbeddings(tokens=rearrange(stacked, "b c l d -> b l (c d)"), pooled=None)


def load_text_encoder(kind: str, path: str | Path, max_length: int, layers: Sequence[int] = (),
                      device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """kind: "t5-clip" or "qwen3" (the preset's TextSpec.kind)."""
    from transformers import AutoModel, AutoTokenizer, CLIPTextModel, T5EncoderModel

    root = Path(path)
    dev = torch.device(device)
    if kind == "t5-clip":
        t5_dir = _first_dir(root, ("text_encoder_2", "t5"))
        clip_dir = _first_dir(root, ("text_encoder", "clip"))
        if t5_dir is None or clip_dir is None:
            raise FileNotFoundError(f"{root}: expected text_encoder/ (CLIP) and text_encoder_2/ (T5) folders, "
                                    "or clip/ and t5/")
        t5 = T5EncoderModel.from_pretrained(t5_dir, dtype=dtype).to(dev).eval()
        clip = CLIPTextModel.from_pretrained(clip_dir, dtype=dtype).to(dev).eval()
        t5_tok = AutoTokenizer.from_pretrained(_tokenizer_dir(root, t5_dir, ("tokenizer_2",)))
        clip_tok = AutoTokenizer.from_pretrained(_tokenizer_dir(root, clip_dir, ("tokenizer",)))
        return T5ClipEncoder(t5, t5_tok, clip, clip_tok, max_length, dev)
    if kind == "qwen3":
        model_dir = _first_dir(root, ("text_encoder", ""))
        if model_dir is None:
            raise FileNotFoundError(f"{root}: expected a Qwen3 model folder (config.json) or text_encoder/")
        # The base model (no LM head) is all we need: hidden states only.
        model = AutoModel.from_pretrained(model_dir, dtype=dtype).to(dev).eval()
        tokenizer = AutoTokenizer.from_pretrained(_tokenizer_dir(root, model_dir, ("tokenizer",)))
        return ChatHiddenStatesEncoder(model, tokenizer, layers, max_length, dev)
    if kind == "mistral":
        # Untested against the real 24B checkpoint (not available here); follows diffusers'
        # Flux2Pipeline._get_mistral_3_small_prompt_embeds.
        model_dir = _first_dir(root, ("text_encoder", ""))
        if model_dir is None:
            raise FileNotFoundError(f"{root}: expected a Mistral 3 model folder (config.json) or text_encoder/")
        model = AutoModel.from_pretrained(model_dir, dtype=dtype).to(dev).eval()
        tok_dir = _tokenizer_dir(root, model_dir, ("tokenizer",))
        templater: Any = None
        try:  # Mistral 3 keeps its chat template with the processor
            from transformers import AutoProcessor

            proc = AutoProcessor.from_pretrained(tok_dir)
            tokenizer, templater = getattr(proc, "tokenizer", proc), proc
        except (OSError, ValueError, TypeError):
            tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        return ChatHiddenStatesEncoder(model, tokenizer, layers, max_length, dev,
                                       system_message=MISTRAL_SYSTEM_MESSAGE, templater=templater)
    raise NotImplementedError(f"text encoder kind {kind!r} is not implemented")
