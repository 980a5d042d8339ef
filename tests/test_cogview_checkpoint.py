"""CogView checkpoints: DeepSpeed .pt and safetensors, clear errors, inspection, factory loading."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from models.cogview.checkpoint import CheckpointError, load_into, read_state_dict
from models.cogview.pipeline import load_cogview_pipeline
from models.cogview.presets import build_model, build_transformer, get_config, inspect_checkpoint
from models.interface import ImageRequest


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models gain nothing from intra-op threads, and on a shared, loaded CPU every parallel
    # region waits for a busy core: one thread runs these tests ~10x faster there.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _demo_weights(seed: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    m = build_transformer(get_config("demo-cogview"), "cpu")
    m.init_weights()
    return {k: v.clone() for k, v in m.state_dict().items()}


def _deepspeed_file(path, module: dict[str, torch.Tensor]) -> None:
    # What CogView's save_ds_checkpoint + DeepSpeed write next to the weights (spec §6).
    torch.save(
        {
            "module": {k: v.half() for k, v in module.items()},
            "iteration": 142000,
            "np_rng_state": np.random.get_state(),
            "random_rng_state": random.getstate(),
            "torch_rng_state": torch.get_rng_state(),
            "buffer_names": [],
            "optimizer": None,
            "ds_config": {"train_batch_size": 6144},
            "ds_version": "0.3.16",
            "mp_world_size": 1,
        },
        path,
    )


def test_deepspeed_checkpoint_loads_with_weights_only(tmp_path) -> None:
    sd = _demo_weights()
    path = tmp_path / "mp_rank_00_model_states.pt"
    _deepspeed_file(path, sd)
    model = build_model("demo-cogview")  # meta
    assert load_into(model, path, dtype=torch.float32) == "deepspeed"
    for k, v in model.state_dict().items():
        assert v.device.type == "cpu" and v.dtype == torch.float32
        torch.testing.assert_close(v, sd[k].half().float())


def test_arbitrary_pickles_are_refused(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:  # a pickle that would call a function if unpickled freely
        pickle.dump({"module": {}, "x": print}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        read_state_dict(path)


def test_safetensors_prefixes_and_sat_names(tmp_path) -> None:
    sd = _demo_weights()
    renamed = {
        ("transformer.word_embeddings.weight" if k == "word_embeddings.weight" else f"module.{k}"): v
        for k, v in sd.items()
    }
    path = tmp_path / "cogview.safetensors"
    save_file(renamed, str(path))
    model = build_model("demo-cogview")
    assert load_into(model, path) == "safetensors"
    assert torch.equal(model.word_embeddings.weight, sd["word_embeddings.weight"])


def test_errors_name_missing_and_misshaped_tensors(tmp_path) -> None:
    sd = _demo_weights()
    del sd["transformer.layers.2.third_layernorm.bias"]
    sd["transformer.position_embeddings.weight"] = torch.zeros(64, 128)
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.safetensors"
    save_file(sd, str(path))
    with pytest.raises(CheckpointError) as e:
        load_into(build_model("demo-cogview"), path)
    msg = str(e.value)
    assert "missing: transformer.layers.2.third_layernorm.bias" in msg
    assert "transformer.position_embeddings.weight [64, 128] != [128, 128]" in msg
    assert "unexpected: extra.weight" in msg


def test_inspect_checkpoint(tmp_path) -> None:
    sd = _demo_weights()
    _deepspeed_file(tmp_path / "t.pt", sd)
    rep = inspect_checkpoint(tmp_path / "t.pt")
    assert rep is not None
    assert {k: rep[k] for k in ("family", "component", "variant", "layout", "dtype", "files", "ok")} == {
        "family": "cogview", "component": "transformer", "variant": "demo-cogview", "layout": "original",
        "dtype": "float16", "files": 1, "ok": True}  # fmt: skip
    assert rep["parameters"] == sum(v.numel() for v in sd.values())
    assert rep["missing"] == rep["unexpected"] == rep["mis_shaped"] == []

    sat = {("transformer.word_embeddings.weight" if k == "word_embeddings.weight" else k): v for k, v in sd.items()}
    sat["transformer.layers.0.mlp.dense_h_to_4h.bias"] = torch.zeros(3)
    save_file(sat, str(tmp_path / "sat.safetensors"))
    rep = inspect_checkpoint(str(tmp_path / "sat.safetensors"))
    assert rep is not None and rep["layout"] == "sat" and not rep["ok"]
    assert rep["mis_shaped"] == [["transformer.layers.0.mlp.dense_h_to_4h.bias", [512], [3]]]

    pipe = load_cogview_pipeline("demo-cogview", {})
    save_file(pipe.vqvae.state_dict(), str(tmp_path / "vq.safetensors"))
    rep = inspect_checkpoint(tmp_path / "vq.safetensors")
    assert rep is not None and rep["component"] == "vqvae" and rep["variant"] == "demo-cogview vqvae" and rep["ok"]
    vq_cfg = pipe.cfg.vqvae
    codebook_stats = vq_cfg.n_codes * (1 + vq_cfg.embed_dim)  # cluster_size, embed_avg: EMA state, not parameters
    assert rep["parameters"] == sum(v.numel() for v in pipe.vqvae.state_dict().values()) - codebook_stats

    save_file({"model.diffusion.weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    assert inspect_checkpoint(tmp_path / "other.safetensors") is None
    (tmp_path / "notes.txt").write_text("hello")
    assert inspect_checkpoint(tmp_path / "notes.txt") is None


def test_registry_sees_cogview() -> None:
    from models import presets as registry

    info = registry.all_presets()
    assert info["cogview-4b"].family == "cogview" and info["demo-cogview"].demo
    assert registry.parameter_count("cogview-4b") == 3_928_849_920


def test_factory_loads_files_and_matches_in_memory(tmp_path) -> None:
    ref = load_cogview_pipeline("demo-cogview", {})
    save_file(ref.transformer.state_dict(), str(tmp_path / "t.safetensors"))
    _deepspeed_file(tmp_path / "t.pt", ref.transformer.state_dict())
    save_file(ref.vqvae.state_dict(), str(tmp_path / "vq.safetensors"))
    req = [ImageRequest("a red circle", 5, 64, 64, 0, 0.0)]
    loaded = load_cogview_pipeline(
        "demo-cogview", {"transformer": str(tmp_path / "t.safetensors"), "vqvae": str(tmp_path / "vq.safetensors")}
    )
    assert np.array_equal(np.asarray(loaded.generate(req)[0]), np.asarray(ref.generate(req)[0]))
    from_pt = load_cogview_pipeline("demo-cogview", {"transformer": str(tmp_path / "t.pt")})
    assert from_pt.transformer.word_embeddings.weight.dtype == torch.float32  # fp16 file, fp32 serving
    with pytest.raises(ValueError, match="needs checkpoints"):
        load_cogview_pipeline("cogview-4b", {})
