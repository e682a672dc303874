"""The real-size builders: the SmolVLM2-500M-shaped directory holds the published numbers, and the
policies built on it have the published sizes, counted on the ``meta`` device (nothing allocated)."""

from __future__ import annotations

import json

import pytest
import torch
from lerobot.policies.pi0 import modeling_pi0
from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy  # noqa: F401  (import cost paid at collection)
from transformers import AutoConfig, SmolVLMForConditionalGeneration

from tmrl_vla.models import real_size
from tmrl_vla.models.real_size import (
    SMOLVLM2_500M_DIR,
    fill_uniform,
    parameter_count,
    render_smolvlm2_500m_files,
    write_smolvlm2_500m,
)
from tmrl_vla.models.tiny_smolvla import validate_vlm_dir


def test_packaged_directory_is_what_the_generator_writes(tmp_path):
    validate_vlm_dir(SMOLVLM2_500M_DIR)
    write_smolvlm2_500m(tmp_path)
    for name in render_smolvlm2_500m_files():
        assert (tmp_path / name).read_bytes() == (SMOLVLM2_500M_DIR / name).read_bytes(), name


def test_config_holds_smolvlm2_500m_numbers():
    """SmolLM2-360M text model, SigLIP base patch16/512 vision tower, scale factor 4."""
    config = AutoConfig.from_pretrained(SMOLVLM2_500M_DIR)
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (960, 32, 15)
    assert (text.num_key_value_heads, text.intermediate_size, text.vocab_size, text.head_dim) == (5, 2560, 49280, 64)
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (768, 12, 12)
    assert (vision.intermediate_size, vision.image_size, vision.patch_size) == (3072, 512, 16)
    assert config.scale_factor == 4 and not config.tie_word_embeddings
    processor = json.loads((SMOLVLM2_500M_DIR / "processor_config.json").read_text())
    assert processor["image_seq_len"] == 64 == (512 // 16 // 4) ** 2  # the Hub processor's value


def test_backbone_has_smolvlm2_500m_parameters_on_meta():
    """The Hub checkpoint's model.safetensors is 2.03 GB of float32, i.e. ~507M parameters (the
    untied 49280-row LM head included); the directory's config builds exactly that network."""
    with torch.device("meta"):
        backbone = SmolVLMForConditionalGeneration(AutoConfig.from_pretrained(SMOLVLM2_500M_DIR))
    total = sum(p.numel() for p in backbone.parameters())
    assert 2.0e9 < 4 * total < 2.06e9, total


def test_smolvla_has_450m_parameters_on_meta():
    """SmolVLA's paper: 450M. Its default truncates the VLM to 16 of 32 layers; the expert (width
    720 = 0.75 * 960) and projections are what its default config trains."""
    counts = parameter_count("smolvla")
    assert 445e6 < counts["total"] < 455e6, counts
    assert 95e6 < counts["trainable"] < 105e6, counts


def test_pi0_as_lerobot_builds_it_on_meta():
    """PaliGemma (2.5B Gemma + 0.4B SigLIP) + 0.3B expert, plus the two untied LM heads LeRobot's
    build keeps (0.53B + 0.26B, never used by the policy): 4.03B."""
    counts = parameter_count("pi0")
    assert 3.95e9 < counts["total"] < 4.1e9, counts


def test_bfloat16_build_patch_is_scoped():
    """The bfloat16 creation swaps LeRobot's model classes only inside the block."""
    originals = (modeling_pi0.PaliGemmaForConditionalGenerationWithPiGemma, modeling_pi0.PiGemmaForCausalLM)
    with real_size._created_in(modeling_pi0, torch.bfloat16):
        assert modeling_pi0.PiGemmaForCausalLM is not originals[1]
    assert (modeling_pi0.PaliGemmaForConditionalGenerationWithPiGemma, modeling_pi0.PiGemmaForCausalLM) == originals
    with pytest.raises(RuntimeError), real_size._created_in(modeling_pi0, torch.bfloat16):
        raise RuntimeError("restored on error too")
    assert modeling_pi0.PiGemmaForCausalLM is originals[1]


def test_fill_uniform_is_seeded_finite_and_small():
    layers = [torch.nn.Linear(64, 64).to(dtype) for dtype in (torch.float32, torch.bfloat16)]
    for layer in layers:
        fill_uniform(layer, std=0.02)
        assert all(p.isfinite().all() and p.abs().max() <= 0.02 * 3**0.5 + 1e-3 for p in layer.parameters())
    again = fill_uniform(torch.nn.Linear(64, 64), std=0.02)
    assert torch.equal(again.weight, layers[0].weight)
