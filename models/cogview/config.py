"""CogView configuration: the transformer, its VQ-VAE image tokenizer and sampling defaults.

Defaults are the released 4B model (spec §1.1, §2, §4.1). Small configurations only change
sizes; every structural rule (Sandwich-LN, tied head, command ids relative to the image and
text blocks, position reset at [ROI2]) is the same, so tests on tiny models exercise the real
code paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Command tokens in CogView's order (spec §1.5): id = n_image_codes + n_text + index.
COMMANDS: tuple[str, ...] = (
    "[PAD]", "[BOI1]", "[BOI2]", "[BOI3]", "[EOI1]", "[EOI2]", "[EOI3]",
    "[ROI1]", "[ROI2]", "[ROI3]", "[SEP]", "[MASK]", "[CLS]", "[ENC]",
    "[TINY]", "[SMALL]", "[BASE]", "[BIG]",
    "[POS0]", "[POS1]", "[POS2]", "[POS3]", "[POS4]", "[POS5]", "[POS6]", "[POS7]", "[POS8]",
)  # fmt: skip


@dataclass(frozen=True)
class VQVAEConfig:
    """`VQVAE(channel=512, n_res_block=0, embed_dim=256, n_embed=8192, stride=6)` (spec §2)."""

    channels: int = 512
    embed_dim: int = 256
    n_codes: int = 8192
    # Number of stride-2 convolutions in the encoder (and transposed ones in the decoder):
    # 3 gives CogView's x8, 256 px -> 32x32 codes.
    downsample: int = 3
    # Dataset statistics of CogView's training images, not ImageNet's (spec §2 read_img).
    mean: tuple[float, float, float] = (0.79093, 0.76271, 0.75340)
    std: tuple[float, float, float] = (0.30379, 0.32279, 0.32800)
    decay: float = 0.99  # EMA codebook update
    eps: float = 1e-5

    @property
    def factor(self) -> int:
        return 2**self.downsample


@dataclass(frozen=True)
class CogViewConfig:
    num_layers: int = 48
    hidden_size: int = 2560
    num_heads: int = 40
    # The position table is sized by --max-position-embeddings (1089), not by the sequence.
    max_positions: int = 1089
    text_vocab: int = 50000
    vocab_multiple: int = 128
    layernorm_eps: float = 1e-5
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    # PB-relax (spec §1.3). Off by default: in fp32/bf16 it equals the plain path, which can use
    # the fused attention kernel. Turned on for fp16, where the plain path overflows.
    pb_relax: bool = False
    pb_relax_alpha: float = 32.0
    # Tokens per side of a text-to-image sample (32 -> 1024 tokens, 256 px).
    image_grid: int = 32
    # Command token that tags the native size in every template ([BASE] = 32x32 in the release).
    size_token: str = "[BASE]"
    # "sentencepiece" needs the cog-pretrain model file; "bytes" is UTF-8 bytes (text_vocab 256).
    text_tokenizer: str = "sentencepiece"
    vqvae: VQVAEConfig = field(default_factory=VQVAEConfig)
    # Sampling defaults of the released scripts (spec §4.1).
    top_k: int = 200
    temperature: float = 1.0
    sr_temperature: float = 1.02
    caption_tokens: int = 20
    # Super-resolution prompts padded with spaces to this many tokens (0: as released, unpadded). The
    # low-res window sits between the text and [ROI2] (where positions restart), so with a fixed
    # text length its tokens keep fixed positions: a small model then learns which low-res token
    # each high-res one magnifies far sooner than when they shift with every prompt's length.
    sr_text_tokens: int = 0
    # Largest number of sequences one forward runs (--max-inference-batch-size).
    max_batch: int = 12

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} not divisible by num_heads {self.num_heads}")
        if self.text_tokenizer not in ("sentencepiece", "bytes"):
            raise ValueError(f"text_tokenizer must be 'sentencepiece' or 'bytes', not {self.text_tokenizer!r}")
        if self.text_tokenizer == "bytes" and self.text_vocab != 256:
            raise ValueError("a byte-level text tokenizer needs text_vocab=256")
        if self.size_token not in COMMANDS:
            raise ValueError(f"unknown size token {self.size_token!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def n_image(self) -> int:
        return self.vqvae.n_codes

    @property
    def command_base(self) -> int:
        return self.vqvae.n_codes + self.text_vocab

    @property
    def n_real_tokens(self) -> int:
        """Image codes + text + the 27 commands; ids at or above this are vocabulary padding."""
        return self.command_base + len(COMMANDS)

    @property
    def vocab_size(self) -> int:
        m = self.vocab_multiple
        return (self.n_real_tokens + m - 1) // m * m

    @property
    def image_tokens(self) -> int:
        return self.image_grid**2

    @property
    def image_size(self) -> int:
        return self.image_grid * self.vqvae.factor

    @property
    def max_text_tokens(self) -> int:
        """Longest prompt that fits `[ROI1] text [BASE] [BOI1] image [EOI1]` in the positions."""
        return self.max_positions - self.image_tokens - 4

    def cmd(self, name: str) -> int:
        """Id of a command token, e.g. cmd('[BOI1]') = 58193 in the released model."""
        return self.command_base + COMMANDS.index(name)
