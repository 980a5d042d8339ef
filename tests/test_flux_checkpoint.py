"""Checkpoint loading: BFL and diffusers layouts, single file and sharded index, clear errors,
variant detection, and the `fluxgate checkpoint inspect` / `fluxgate presets` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cli.main import main as cli_main
from models.flux.autoencoder import build_autoencoder
from models.flux.checkpoint import CheckpointError, load_autoencoder, load_transformer
from models.flux.convert import ae_bfl_to_diffusers, transformer_bfl_to_diffusers
from models.flux.pipeline import load_flux_pipeline
from models.flux.presets import build_transformer, get_preset
from models.presets import inspect_checkpoint


def _save(sd: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def _save_sharded(sd: dict[str, torch.Tensor], folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(sd)
    shards = {f"{name}-0000{i + 1}-of-00002.safetensors": keys[i::2] for i in range(2)}
    weight_map = {}
    for fname, ks in shards.items():
        _save({k: sd[k] for k in ks}, folder / fname)
        weight_map.update({k: fname for k in ks})
    index = folder / f"{name}.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return index


def _model(preset: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_transformer(get_preset(preset).transformer, "cpu").eval()


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("preset", ["demo-flux1-dev", "demo-flux2-klein"])
def test_transformer_round_trips_bfl_diffusers_and_sharded(preset: str, tmp_path: Path) -> None:
    p = get_preset(preset)
    ref = _model(preset)
    bfl = _save(ref.state_dict(), tmp_path / "bfl.safetensors")
    comfy = {f"model.diffusion_model.{k}": v for k, v in ref.state_dict().items()}
    prefixed = _save(comfy, tmp_path / "pre.safetensors")
    dif_sd = transformer_bfl_to_diffusers(ref.state_dict(), p.arch)
    dif = _save(dif_sd, tmp_path / "diffusion_pytorch_model.safetensors")
    sharded = _save_sharded(dif_sd, tmp_path / "repo" / "transformer", "diffusion_pytorch_model")
    for path in (bfl, prefixed, dif, sharded, sharded.parent, tmp_path / "repo"):
        loaded = load_transformer(path, p)
        assert _same(loaded, ref), path
    half = load_transformer(bfl, p, dtype=torch.bfloat16)
    assert next(half.parameters()).dtype == torch.bfloat16


def test_wrong_transformer_file_names_the_tensors(tmp_path: Path) -> None:
    p = get_preset("demo-flux1-dev")
    sd = dict(_model("demo-flux1-dev").state_dict())
    del sd["guidance_in.in_layer.weight"]
    sd["bogus.weight"] = torch.zeros(3)
    hidden, in_ch = sd["img_in.weight"].shape
    sd["img_in.weight"] = torch.zeros(hidden, 32)
    path = _save(sd, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_transformer(path, p)
    msg = str(err.value)
    assert "guidance_in.in_layer.weight" in msg and "bogus.weight" in msg
    assert f"img_in.weight (expected [{hidden}, {in_ch}], found [{hidden}, 32])" in msg
    # A schnell checkpoint given to a dev preset: the guidance embedder is reported missing.
    schnell = _save(_model("demo-flux1-schnell").state_dict(), tmp_path / "schnell.safetensors")
    with pytest.raises(CheckpointError, match="looks like demo-flux1-schnell.*missing tensors: guidance_in"):
        load_transformer(schnell, p)


@pytest.mark.parametrize("preset", ["demo-flux1-schnell", "demo-flux2-klein"])
def test_autoencoder_round_trips_both_layouts(preset: str, tmp_path: Path) -> None:
    params = get_preset(preset).autoencoder
    torch.manual_seed(1)
    ref = build_autoencoder(params).eval()
    bfl = _save(ref.state_dict(), tmp_path / "ae.safetensors")
    dif = _save_sharded(ae_bfl_to_diffusers(ref.state_dict()), tmp_path / "repo" / "vae", "diffusion_pytorch_model")
    for path in (bfl, dif, tmp_path / "repo"):
        assert _same(load_autoencoder(path, params), ref), path
    bad = dict(ref.state_dict())
    del bad["decoder.conv_out.bias"]
    with pytest.raises(CheckpointError, match="decoder.conv_out.bias"):
        load_autoencoder(_save(bad, tmp_path / "bad_ae.safetensors"), params)


def test_pipeline_loads_saved_demo_weights(tmp_path: Path) -> None:
    pipe = load_flux_pipeline("demo-flux1-schnell", {})
    t = _save(pipe.transformer.state_dict(), tmp_path / "t.safetensors")
    a = _save(pipe.autoencoder.state_dict(), tmp_path / "a.safetensors")
    pipe.text_encoder.save(tmp_path / "text.safetensors")  # type: ignore[attr-defined]
    loaded = load_flux_pipeline("demo-flux1-schnell", {"transformer": str(t), "autoencoder": str(a),
                                                       "text_encoder": str(tmp_path / "text.safetensors")})
    from models.interface import ImageRequest

    r = [ImageRequest(prompt="a cat", seed=3, width=64, height=64, steps=4, guidance=0.0)]
    assert (pipe.generate_pixels(r)[0] - loaded.generate_pixels(r)[0]).abs().max() <= 1e-5  # type: ignore[operator]


def test_inspect_reports_variant_layout_and_mismatches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = _model("demo-flux2-klein")
    dif = _save(transformer_bfl_to_diffusers(ref.state_dict(), "flux2"), tmp_path / "k.safetensors")
    rep = inspect_checkpoint(str(dif))
    assert rep is not None
    assert (rep["family"], rep["variant"], rep["layout"], rep["ok"]) == ("flux", "demo-flux2-klein", "diffusers", True)
    assert rep["parameters"] == sum(p.numel() for p in ref.parameters())
    assert cli_main(["checkpoint", "inspect", str(dif)]) == 0
    assert "demo-flux2-klein" in capsys.readouterr().out

    sd = dict(_model("demo-flux1-dev").state_dict())
    sd["final_layer.linear.weight"] = torch.zeros(7, 100)
    bad = _save(sd, tmp_path / "bad.safetensors")
    assert cli_main(["checkpoint", "inspect", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "final_layer.linear.weight" in out and "MISMATCH" in out

    ae = _save(build_autoencoder(get_preset("demo-flux1-dev").autoencoder).state_dict(), tmp_path / "ae.safetensors")
    rep = inspect_checkpoint(str(ae))
    assert rep is not None and rep["component"] == "autoencoder" and rep["ok"]

    _save({"foo": torch.zeros(2)}, tmp_path / "other.safetensors")
    assert cli_main(["checkpoint", "inspect", str(tmp_path / "other.safetensors")]) == 2


def test_presets_command_lists_flux_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["presets", "--family", "flux"]) == 0
    out = capsys.readouterr().out
    assert "flux1-dev" in out and "11,901,408,320" in out and "demo-flux2-klein" in out
