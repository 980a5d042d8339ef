"""Full-size FLUX presets: parameter counts on the meta device equal the spec's exactly."""

from __future__ import annotations

import pytest
import torch

from models.flux.presets import PRESETS, build_model, parameter_count
from models.presets import all_presets

SPEC_COUNTS = {
    "flux1-dev": 11_901_408_320,
    "flux1-kontext-dev": 11_901_408_320,
    "flux1-schnell": 11_891_178_560,
    "flux2-klein-4b": 3_875_544_576,
    "flux2-klein-9b": 9_078_581_248,
    "flux2-dev": 32_223_281_152,
}


@pytest.mark.parametrize("name", sorted(SPEC_COUNTS))
def test_parameter_count_matches_spec(name: str) -> None:
    model = build_model(name)
    assert next(model.parameters()).device.type == "meta"
    assert parameter_count(model) == SPEC_COUNTS[name]


def test_fill_is_dev_with_384_input_channels() -> None:
    # img_in grows from 64 to 384 inputs: 320 more columns of 3072.
    assert parameter_count(build_model("flux1-fill-dev")) == SPEC_COUNTS["flux1-dev"] + 320 * 3072


def test_flux1_tensor_counts_match_spec() -> None:
    assert len(build_model("flux1-dev").state_dict()) == 780
    assert len(build_model("flux1-schnell").state_dict()) == 776


def test_every_preset_builds_and_registry_lists_flux() -> None:
    registry = all_presets()
    for name, preset in PRESETS.items():
        assert registry[name].family == "flux" and registry[name].demo == preset.demo
    demo = build_model("demo-flux1-schnell", device="cpu")
    assert isinstance(next(demo.parameters()), torch.nn.Parameter)
