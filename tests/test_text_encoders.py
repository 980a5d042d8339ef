"""Text encoders: T5 + CLIP (FLUX.1) and Qwen3 hidden states (klein) built from tiny random
configs and tiny offline tokenizers, plus the byte-level demo encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.text.demo import DemoTextEncoder, DemoTextParams, tokenize

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WORDS = ["a", "red", "circle", "blue", "square", "on", "the", "left", "user", "assistant"]


def _tokenizer(folder: Path, specials: dict[str, str], template: str | None = None,
               words: list[str] = WORDS) -> None:
    """A WordLevel tokenizer wrapped as a fast tokenizer and saved (no downloads)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([*specials.values(), *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=specials["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **specials)
    if template:
        fast.chat_template = template
    fast.save_pretrained(folder)


def _t5_clip_repo(root: Path) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    n = len(WORDS) + 3
    T5EncoderModel(T5Config(vocab_size=n, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                            pad_token_id=0, eos_token_id=1)).save_pretrained(root / "text_encoder_2")
    CLIPTextModel(CLIPTextConfig(vocab_size=n, hidden_size=24, intermediate_size=48, num_hidden_layers=2,
                                 num_attention_heads=4, max_position_embeddings=77, pad_token_id=0, bos_token_id=1,
                                 eos_token_id=2)).save_pretrained(root / "text_encoder")
    _tokenizer(root / "tokenizer_2", {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"})
    _tokenizer(root / "tokenizer", {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>",
                                    "unk_token": "<unk>"})


def test_t5_clip_encoder_pads_to_max_length_without_mask(tmp_path: Path) -> None:
    from models.text.hf import load_text_encoder

    _t5_clip_repo(tmp_path)
    enc = load_text_encoder("t5-clip", tmp_path, max_length=16)
    out = enc.encode(["a red circle", "blue square on the left"])
    assert out.tokens.shape == (2, 16, 32) and out.pooled is not None and out.pooled.shape == (2, 24)
    # No attention mask: padded positions are encoded too, exactly as a direct unmasked call.
    ids = enc.t5_tokenizer(["a red circle"], padding="max_length", max_length=16, return_tensors="pt").input_ids
    assert (ids[0, 3:] == 0).all()
    with torch.no_grad():
        direct = enc.t5(input_ids=ids).last_hidden_state
    assert torch.allclose(out.tokens[:1], direct, atol=1e-6)
    single = enc.encode(["a red circle"])
    assert torch.allclose(single.tokens, out.tokens[:1], atol=1e-6)


QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% if enable_thinking is defined and not enable_thinking %}"
    "<think></think> {% endif %}{% endif %}"
)


def test_qwen3_encoder_stacks_layers_layer_major(tmp_path: Path) -> None:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from models.text.hf import load_text_encoder

    torch.manual_seed(0)
    specials = {"pad_token": "<|endoftext|>", "unk_token": "<unk>", "eos_token": "<|im_end|>"}
    words = [*WORDS, "<|im_start|>", "<think></think>"]
    n = len(words) + 3
    Qwen3ForCausalLM(Qwen3Config(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                 pad_token_id=0)).save_pretrained(tmp_path)
    _tokenizer(tmp_path, specials, QWEN_TEMPLATE, words)
    enc = load_text_encoder("qwen3", tmp_path, max_length=24, layers=(1, 2, 3))
    out = enc.encode(["a red circle", "blue square"])
    assert out.tokens.shape == (2, 24, 96) and out.pooled is None
    text = enc._template("a red circle")
    assert "<think></think>" in text and text.rstrip().endswith("<think></think>")
    batch = enc.tokenizer([text], padding="max_length", max_length=24, return_tensors="pt")
    with torch.no_grad():
        hs = enc.model(**batch, output_hidden_states=True).hidden_states
    assert torch.allclose(out.tokens[0, :, 32:64], hs[2][0], atol=1e-5)  # layer-major concatenation


def test_demo_encoder_bytes_shapes_and_round_trip(tmp_path: Path) -> None:
    ids = tokenize(["ab", "中"], 8)
    assert ids[0, :3].tolist() == [ord("a") + 1, ord("b") + 1, 257] and ids[1, :4].tolist()[3] == 257
    p = DemoTextParams(width=32, depth=2, heads=4, max_length=16, context_dim=24, pooled_dim=20)
    torch.manual_seed(0)
    enc = DemoTextEncoder(p).eval()
    out = enc.encode(["a red circle", "红色的圆"])
    assert out.tokens.shape == (2, 16, 24) and out.pooled is not None and out.pooled.shape == (2, 20)
    assert torch.allclose(enc.encode(["红色的圆"]).tokens[0], out.tokens[1], atol=1e-6)
    enc.save(tmp_path / "t.safetensors")
    again = DemoTextEncoder.from_file(tmp_path / "t.safetensors", p)
    assert torch.allclose(again.encode(["a red circle"]).tokens[0], out.tokens[0], atol=1e-6)
    # Trainable: gradients reach the embedding.
    enc.train()
    enc(tokenize(["x"], 16)).tokens.sum().backward()
    assert enc.token_embedding.weight.grad is not None


MISTRAL_TEMPLATE = (
    "<s>{% for m in messages %}{% if m['role'] == 'system' %}[SYSTEM_PROMPT] {{ m['content'][0]['text'] }} "
    "[/SYSTEM_PROMPT] {% else %}[INST] {{ m['content'][0]['text'] }} [/INST]{% endif %}{% endfor %}"
)


def test_mistral_style_encoder_uses_system_turn_and_layers(tmp_path: Path) -> None:
    from transformers import MistralConfig, MistralModel

    from models.text.hf import MISTRAL_SYSTEM_MESSAGE, load_text_encoder

    torch.manual_seed(0)
    words = [*WORDS, "<s>", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[INST]", "[/INST]",
             *MISTRAL_SYSTEM_MESSAGE.split()]
    MistralModel(MistralConfig(vocab_size=len(words) + 3, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                               pad_token_id=0)).save_pretrained(tmp_path)
    _tokenizer(tmp_path, {"pad_token": "<pad>", "unk_token": "<unk>", "eos_token": "</s>"}, MISTRAL_TEMPLATE, words)
    enc = load_text_encoder("mistral", tmp_path, max_length=64, layers=(1, 2, 3))
    text = enc._template("a red circle")
    assert text.startswith("<s>[SYSTEM_PROMPT] You are an AI") and text.endswith("[INST] a red circle [/INST]")
    out = enc.encode(["a red circle"])
    assert out.tokens.shape == (1, 64, 96)


def test_full_style_preset_loads_all_three_parts_from_disk(tmp_path: Path) -> None:
    from dataclasses import replace

    from safetensors.torch import save_file

    from models.flux.autoencoder import build_autoencoder
    from models.flux.pipeline import load_flux_pipeline
    from models.flux.presets import TextSpec, build_transformer, get_preset
    from models.interface import ImageRequest

    demo = get_preset("demo-flux1-dev")
    preset = replace(demo, name="tiny-t5-clip", demo=False, text=TextSpec("t5-clip", 16),
                     transformer=replace(demo.transformer, context_in_dim=32, vec_in_dim=24))
    _t5_clip_repo(tmp_path / "text")
    torch.manual_seed(0)
    save_file(build_transformer(preset.transformer, "cpu").state_dict(), str(tmp_path / "t.safetensors"))
    save_file(build_autoencoder(preset.autoencoder).state_dict(), str(tmp_path / "ae.safetensors"))
    ckpt = {"transformer": str(tmp_path / "t.safetensors"), "autoencoder": str(tmp_path / "ae.safetensors"),
            "text_encoder": str(tmp_path / "text")}
    pipe = load_flux_pipeline(preset, ckpt)
    out = pipe.generate([ImageRequest(prompt="a red circle", seed=1, width=32, height=32, steps=2, guidance=3.5)])
    assert out[0] is not None and out[0].size == (32, 32)
    with pytest.raises(ValueError, match="text_encoder"):
        load_flux_pipeline(preset, {k: v for k, v in ckpt.items() if k != "text_encoder"})
