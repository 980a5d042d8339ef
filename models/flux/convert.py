"""BFL <-> diffusers state-dict mapping for the FLUX transformers and autoencoders (spec §11).

Our modules use BFL names, so loading a diffusers checkpoint means converting it to BFL first.
The transformer map is a list of groups: one BFL tensor <-> one or more diffusers tensors,
joined by a fused-split (qkv, single-block linear1) or a half swap (final adaLN, whose
(shift, scale) diffusers stores as (scale, shift)). The AE map is a 1:1 rename, plus 1x1-conv
<-> Linear reshapes for the mid attention.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

StateDict = dict[str, Tensor]


@dataclass(frozen=True)
class Group:
    bfl: str  # key without the .weight/.bias suffix
    diffusers: tuple[str, ...]
    op: str = "same"  # "same" | "qkv" (chunk in 3) | "linear1" (q, k, v, mlp) | "swap" (halves)


def _block_count(keys: set[str], prefix: str) -> int:
    pat = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    found = [int(m.group(1)) for k in keys if (m := pat.match(k))]
    return max(found) + 1 if found else 0


def _flux1_groups(n_double: int, n_single: int, guidance: bool) -> list[Group]:
    g = [
        Group("img_in", ("x_embedder",)),
        Group("txt_in", ("context_embedder",)),
        Group("time_in.in_layer", ("time_text_embed.timestep_embedder.linear_1",)),
        Group("time_in.out_layer", ("time_text_embed.timestep_embedder.linear_2",)),
        Group("vector_in.in_layer", ("time_text_embed.text_embedder.linear_1",)),
        Group("vector_in.out_layer", ("time_text_embed.text_embedder.linear_2",)),
        Group("final_layer.linear", ("proj_out",)),
        Group("final_layer.adaLN_modulation.1", ("norm_out.linear",), "swap"),
    ]
    if guidance:
        g += [
            Group("guidance_in.in_layer", ("time_text_embed.guidance_embedder.linear_1",)),
            Group("guidance_in.out_layer", ("time_text_embed.guidance_embedder.linear_2",)),
        ]
    for i in range(n_double):
        b, d = f"double_blocks.{i}", f"transformer_blocks.{i}"
        g += [
            Group(f"{b}.img_mod.lin", (f"{d}.norm1.linear",)),
            Group(f"{b}.txt_mod.lin", (f"{d}.norm1_context.linear",)),
            Group(f"{b}.img_attn.qkv", (f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v"), "qkv"),
            Group(f"{b}.txt_attn.qkv", (f"{d}.attn.add_q_proj", f"{d}.attn.add_k_proj", f"{d}.attn.add_v_proj"),
                  "qkv"),
            Group(f"{b}.img_attn.norm.query_norm", (f"{d}.attn.norm_q",)),
            Group(f"{b}.img_attn.norm.key_norm", (f"{d}.attn.norm_k",)),
            Group(f"{b}.txt_attn.norm.query_norm", (f"{d}.attn.norm_added_q",)),
            Group(f"{b}.txt_attn.norm.key_norm", (f"{d}.attn.norm_added_k",)),
            Group(f"{b}.img_attn.proj", (f"{d}.attn.to_out.0",)),
            Group(f"{b}.txt_attn.proj", (f"{d}.attn.to_add_out",)),
            Group(f"{b}.img_mlp.0", (f"{d}.ff.net.0.proj",)),
            Group(f"{b}.img_mlp.2", (f"{d}.ff.net.2",)),
            Group(f"{b}.txt_mlp.0", (f"{d}.ff_context.net.0.proj",)),
            Group(f"{b}.txt_mlp.2", (f"{d}.ff_context.net.2",)),
        ]
    for i in range(n_single):
        b, d = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        g += [
            Group(f"{b}.modulation.lin", (f"{d}.norm.linear",)),
            Group(f"{b}.linear1", (f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v", f"{d}.proj_mlp"),
                  "linear1"),
            Group(f"{b}.norm.query_norm", (f"{d}.attn.norm_q",)),
            Group(f"{b}.norm.key_norm", (f"{d}.attn.norm_k",)),
            Group(f"{b}.linear2", (f"{d}.proj_out",)),
        ]
    return g


def _flux2_groups(n_double: int, n_single: int, guidance: bool) -> list[Group]:
    g = [
        Group("img_in", ("x_embedder",)),
        Group("txt_in", ("context_embedder",)),
        Group("time_in.in_layer", ("time_guidance_embed.timestep_embedder.linear_1",)),
        Group("time_in.out_layer", ("time_guidance_embed.timestep_embedder.linear_2",)),
        Group("double_stream_modulation_img.lin", ("double_stream_modulation_img.linear",)),
        Group("double_stream_modulation_txt.lin", ("double_stream_modulation_txt.linear",)),
        Group("single_stream_modulation.lin", ("single_stream_modulation.linear",)),
        Group("final_layer.linear", ("proj_out",)),
        Group("final_layer.adaLN_modulation.1", ("norm_out.linear",), "swap"),
    ]
    if guidance:
        g += [
            Group("guidance_in.in_layer", ("time_guidance_embed.guidance_embedder.linear_1",)),
            Group("guidance_in.out_layer", ("time_guidance_embed.guidance_embedder.linear_2",)),
        ]
    for i in range(n_double):
        b, d = f"double_blocks.{i}", f"transformer_blocks.{i}"
        g += [
            Group(f"{b}.img_attn.qkv", (f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v"), "qkv"),
            Group(f"{b}.txt_attn.qkv", (f"{d}.attn.add_q_proj", f"{d}.attn.add_k_proj", f"{d}.attn.add_v_proj"),
                  "qkv"),
            Group(f"{b}.img_attn.norm.query_norm", (f"{d}.attn.norm_q",)),
            Group(f"{b}.img_attn.norm.key_norm", (f"{d}.attn.norm_k",)),
            Group(f"{b}.txt_attn.norm.query_norm", (f"{d}.attn.norm_added_q",)),
            Group(f"{b}.txt_attn.norm.key_norm", (f"{d}.attn.norm_added_k",)),
            Group(f"{b}.img_attn.proj", (f"{d}.attn.to_out.0",)),
            Group(f"{b}.txt_attn.proj", (f"{d}.attn.to_add_out",)),
            Group(f"{b}.img_mlp.0", (f"{d}.ff.linear_in",)),
            Group(f"{b}.img_mlp.2", (f"{d}.ff.linear_out",)),
            Group(f"{b}.txt_mlp.0", (f"{d}.ff_context.linear_in",)),
            Group(f"{b}.txt_mlp.2", (f"{d}.ff_context.linear_out",)),
        ]
    for i in range(n_single):
        b, d = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        g += [
            Group(f"{b}.linear1", (f"{d}.attn.to_qkv_mlp_proj",)),
            Group(f"{b}.linear2", (f"{d}.attn.to_out",)),
            Group(f"{b}.norm.query_norm", (f"{d}.attn.norm_q",)),
            Group(f"{b}.norm.key_norm", (f"{d}.attn.norm_k",)),
        ]
    return g


# BFL norms store `scale`; diffusers' RMSNorm stores `weight`.
def _suffixes(bfl: str) -> list[tuple[str, str]]:
    if bfl.endswith(("query_norm", "key_norm")):
        return [("scale", "weight")]
    return [("weight", "weight"), ("bias", "bias")]


def _swap(t: Tensor) -> Tensor:
    a, b = t.chunk(2, dim=0)
    return torch.cat((b, a), dim=0)


def _groups_for(sd_keys: set[str], layout: str, arch: str) -> list[Group]:
    if layout == "bfl":
        nd, ns = _block_count(sd_keys, "double_blocks"), _block_count(sd_keys, "single_blocks")
        guidance = any(k.startswith("guidance_in.") for k in sd_keys)
    else:
        nd = _block_count(sd_keys, "transformer_blocks")
        ns = _block_count(sd_keys, "single_transformer_blocks")
        guidance = any(".guidance_embedder." in k for k in sd_keys)
    return (_flux2_groups if arch == "flux2" else _flux1_groups)(nd, ns, guidance)


def transformer_bfl_to_diffusers(sd: Mapping[str, Tensor], arch: str) -> StateDict:
    """arch: "flux1" or "flux2". Keys the map does not know are kept as they are."""
    out: StateDict = {}
    used: set[str] = set()
    for g in _groups_for(set(sd), "bfl", arch):
        for bs, ds in _suffixes(g.bfl):
            key = f"{g.bfl}.{bs}"
            if key not in sd:
                continue
            t = sd[key]
            used.add(key)
            if g.op == "same":
                out[f"{g.diffusers[0]}.{ds}"] = t
            elif g.op == "swap":
                out[f"{g.diffusers[0]}.{ds}"] = _swap(t)
            elif g.op == "qkv":
                for name, part in zip(g.diffusers, t.chunk(3, dim=0), strict=True):
                    out[f"{name}.{ds}"] = part
            else:  # linear1: [q | k | v | mlp]; hidden size = its in-features (= the bias' q part)
                hidden = sd[f"{g.bfl}.weight"].shape[1]
                sizes = [hidden, hidden, hidden, t.shape[0] - 3 * hidden]
                for name, part in zip(g.diffusers, t.split(sizes, dim=0), strict=True):
                    out[f"{name}.{ds}"] = part
    out.update({k: v for k, v in sd.items() if k not in used})
    return out


def transformer_diffusers_to_bfl(sd: Mapping[str, Tensor], arch: str) -> StateDict:
    out: StateDict = {}
    used: set[str] = set()
    for g in _groups_for(set(sd), "diffusers", arch):
        for bs, ds in _suffixes(g.bfl):
            keys = [f"{d}.{ds}" for d in g.diffusers]
            if not all(k in sd for k in keys):
                continue  # reported later as a missing BFL tensor
            used.update(keys)
            parts = [sd[k] for k in keys]
            t = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
            out[f"{g.bfl}.{bs}"] = _swap(t) if g.op == "swap" else t
    out.update({k: v for k, v in sd.items() if k not in used})
    return out


# ---------------------------------------------------------------- autoencoder (1:1 renames)

_AE_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_AE_ATTN_INV = {v: k for k, v in _AE_ATTN.items()}


def _n_levels(keys: set[str], prefix: str) -> int:
    return _block_count(keys, prefix)


def ae_bfl_to_diffusers(sd: Mapping[str, Tensor]) -> StateDict:
    """BFL AE keys -> diffusers AutoencoderKL / AutoencoderKLFlux2 keys."""
    n_up = _n_levels(set(sd), "decoder.up")
    out: StateDict = {}
    for key, t in sd.items():
        k = key
        k = re.sub(r"^(encoder|decoder)\.mid\.block_(\d)\.", lambda m: f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}.", k)
        m = re.match(r"^(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)$", k)
        if m:
            k = f"{m[1]}.mid_block.attentions.0.{_AE_ATTN[m[2]]}.{m[3]}"
            if m[2] != "norm" and t.ndim == 4:
                t = t[:, :, 0, 0]  # 1x1 conv -> Linear
        k = re.sub(r"^encoder\.down\.(\d+)\.block\.", r"encoder.down_blocks.\1.resnets.", k)
        k = re.sub(r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0.", k)
        k = re.sub(r"^decoder\.up\.(\d+)\.block\.", lambda m: f"decoder.up_blocks.{n_up - 1 - int(m[1])}.resnets.", k)
        k = re.sub(r"^decoder\.up\.(\d+)\.upsample\.",
                   lambda m: f"decoder.up_blocks.{n_up - 1 - int(m[1])}.upsamplers.0.", k)
        k = k.replace(".nin_shortcut.", ".conv_shortcut.")
        k = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out.", k)
        k = re.sub(r"^encoder\.quant_conv\.", "quant_conv.", k)
        k = re.sub(r"^decoder\.post_quant_conv\.", "post_quant_conv.", k)
        out[k] = t
    return out


def ae_diffusers_to_bfl(sd: Mapping[str, Tensor]) -> StateDict:
    n_up = _n_levels(set(sd), "decoder.up_blocks")
    out: StateDict = {}
    for key, t in sd.items():
        k = key
        k = re.sub(r"^(encoder|decoder)\.mid_block\.resnets\.(\d)\.",
                   lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}.", k)
        m = re.match(r"^(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\."
                     r"(weight|bias)$", k)
        if m:
            k = f"{m[1]}.mid.attn_1.{_AE_ATTN_INV[m[2]]}.{m[3]}"
            if m[2] != "group_norm" and t.ndim == 2:
                t = t[:, :, None, None]  # Linear -> 1x1 conv
        k = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", k)
        k = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", k)
        k = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{n_up - 1 - int(m[1])}.block.", k)
        k = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
                   lambda m: f"decoder.up.{n_up - 1 - int(m[1])}.upsample.", k)
        k = k.replace(".conv_shortcut.", ".nin_shortcut.")
        k = re.sub(r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out.", k)
        k = re.sub(r"^quant_conv\.", "encoder.quant_conv.", k)
        k = re.sub(r"^post_quant_conv\.", "decoder.post_quant_conv.", k)
        out[k] = t
    return out
