"""CogView (v1): autoregressive transformer over VQ-VAE image tokens (specs/cogview.md).

config (sizes, token ids) · text (SentencePiece / UTF-8 bytes) · vqvae · transformer (Sandwich-LN,
PB-relax) · sampling (KV-cache filler) · tasks (templates, SR windows, caption scoring) ·
checkpoint · presets · pipeline (`load_cogview_pipeline`) · train (demo training loops).
"""
