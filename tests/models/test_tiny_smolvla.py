"""Tests for the packaged tiny SmolVLM backbone and the real LeRobot SmolVLA built on it.

Batches go through LeRobot's own SmolVLA pre-processor (newline-terminate ``task`` -> tokenise -> normalise), so
these tests also pin down the batch layout a BC trainer has to produce.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
import torch
from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors
from lerobot.utils.constants import ACTION, OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS, OBS_STATE

from tmrl_vla.models.make_tiny_vlm import write_tiny_vlm
from tmrl_vla.models.tiny_smolvla import (
    REQUIRED_VLM_FILES,
    TINY_VLM_DIR,
    make_tiny_smolvla,
    tiny_image_seq_len,
    tiny_smolvla_config,
    validate_vlm_dir,
)

IMAGE_KEY = "observation.images.front"
STATE_DIM = 6
ACTION_DIM = 6
CHUNK = 10
TASKS = ("pick up the red cube", "Push the blue block to the left!")


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forbid Hub access: the env var for subprocesses, the parsed constant for this already-imported process."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(autouse=True)
def single_thread() -> None:
    """One intra-op thread keeps timings stable on shared CI cores; seeds make every test reproducible."""
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture
def policy() -> SmolVLAPolicy:
    return make_tiny_smolvla()


def _dataset_stats() -> dict[str, dict[str, torch.Tensor]]:
    """MEAN_STD stats for state and action (SmolVLA's normalisation mode for both); images use IDENTITY."""
    return {
        OBS_STATE: {"mean": torch.zeros(STATE_DIM), "std": torch.ones(STATE_DIM)},
        ACTION: {"mean": torch.full((ACTION_DIM,), 0.5), "std": torch.full((ACTION_DIM,), 2.0)},
    }


def _raw_batch(batch_size: int, seed: int = 1, with_action: bool = True) -> dict[str, Any]:
    """A dataloader-style batch in raw units: images in [0, 1], unnormalised state/actions, task strings."""
    gen = torch.Generator().manual_seed(seed)
    batch: dict[str, Any] = {
        IMAGE_KEY: torch.rand(batch_size, 3, 64, 64, generator=gen),
        OBS_STATE: torch.randn(batch_size, STATE_DIM, generator=gen),
        "task": [TASKS[i % len(TASKS)] for i in range(batch_size)],
    }
    if with_action:
        batch[ACTION] = 0.5 + 2.0 * torch.randn(batch_size, CHUNK, ACTION_DIM, generator=gen)
        is_pad = torch.zeros(batch_size, CHUNK, dtype=torch.bool)
        is_pad[0, -3:] = True  # one episode ending inside the chunk
        batch["action_is_pad"] = is_pad
    return batch


def _preprocessed(policy: SmolVLAPolicy, batch_size: int, with_action: bool = True) -> dict[str, Any]:
    preprocessor, _ = make_smolvla_pre_post_processors(policy.config, _dataset_stats())
    return preprocessor(_raw_batch(batch_size, with_action=with_action))


def test_builds_offline_with_expected_shape(policy: SmolVLAPolicy) -> None:
    n_params = sum(p.numel() for p in policy.parameters())
    assert 0.5e6 < n_params < 2e6
    assert policy.config.vlm_model_name == str(TINY_VLM_DIR)
    assert all(p.requires_grad for p in policy.model.vlm_with_expert.vlm.model.vision_model.parameters())
    tokenizer = policy.model.vlm_with_expert.processor.tokenizer
    special_ids = {tokenizer.fake_image_token_id, tokenizer.global_image_token_id, tokenizer.image_token_id}
    assert len(special_ids) == 3 and max(special_ids) < policy.model.vlm_with_expert.config.text_config.vocab_size


def test_image_token_count_matches_processor(policy: SmolVLAPolicy) -> None:
    """The connector's output length must equal the processor's ``image_seq_len`` (16 at 64 px)."""
    tokens = policy.model.vlm_with_expert.embed_image(torch.zeros(2, 3, 64, 64))
    assert tokens.shape[1] == tiny_image_seq_len(64) == 16
    assert policy.model.vlm_with_expert.processor.image_seq_len == 16


def test_preprocessor_tokenises_task(policy: SmolVLAPolicy) -> None:
    batch = _preprocessed(policy, batch_size=2)
    tokens, mask = batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK]
    assert tokens.dtype == torch.long and mask.dtype == torch.bool and tokens.shape == mask.shape
    tokenizer = policy.model.vlm_with_expert.processor.tokenizer
    first = tokenizer.convert_ids_to_tokens(tokens[0][mask[0]].tolist())
    assert first == ["pick", "up", "the", "red", "cube", "\n"]
    assert tokenizer.unk_token_id not in tokens[mask].tolist()


def test_forward_returns_finite_loss(policy: SmolVLAPolicy) -> None:
    loss, info = policy.forward(_preprocessed(policy, batch_size=4))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert "losses_after_in_ep_bound" in info  # action_is_pad reached the policy


def test_predict_action_chunk_shape(policy: SmolVLAPolicy) -> None:
    _, postprocessor = make_smolvla_pre_post_processors(policy.config, _dataset_stats())
    actions = policy.predict_action_chunk(_preprocessed(policy, batch_size=3, with_action=False))
    assert actions.shape == (3, CHUNK, ACTION_DIM)
    assert postprocessor(actions).shape == (3, CHUNK, ACTION_DIM)


def test_behaviour_cloning_loss_falls(policy: SmolVLAPolicy) -> None:
    """Adam on one fixed batch with fixed flow-matching noise/time is plain regression, so it must fit quickly.

    Fixing noise and time removes the sampling variance of the flow-matching loss; what remains checks that gradients
    reach the whole stack (vision, VLM, expert) and that the loss is optimisable.
    """
    batch = _preprocessed(policy, batch_size=8)
    gen = torch.Generator().manual_seed(2)
    noise = torch.randn(8, CHUNK, policy.config.max_action_dim, generator=gen)
    time = torch.rand(8, generator=gen) * 0.998 + 0.001
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=1e-3)
    policy.train()
    losses = []
    for _ in range(30):
        loss, _ = policy.forward(dict(batch), noise=noise, time=time)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.25 * losses[0], losses


def test_config_overrides_and_features() -> None:
    config = tiny_smolvla_config(image_keys=("observation.images.a", "observation.images.b"), chunk_size=20)
    assert set(config.image_features) == {"observation.images.a", "observation.images.b"}
    assert config.chunk_size == 20 and config.resize_imgs_with_padding == (64, 64)
    with pytest.raises(ValueError, match="scale factor"):
        tiny_smolvla_config(image_size=72)


def test_missing_tokenizer_raises(tmp_path: Path) -> None:
    broken = tmp_path / "vlm"
    shutil.copytree(TINY_VLM_DIR, broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json") as excinfo:
        make_tiny_smolvla(vlm_model_name=str(broken))
    assert str(broken) in str(excinfo.value)
    validate_vlm_dir(TINY_VLM_DIR)  # the packaged directory itself is complete


def test_generator_reproduces_packaged_files(tmp_path: Path) -> None:
    written = {p.name for p in write_tiny_vlm(tmp_path)}
    packaged = {p.name for p in TINY_VLM_DIR.iterdir() if p.is_file()}
    assert written == packaged and set(REQUIRED_VLM_FILES) <= written
    for name in sorted(written):
        fresh, shipped = (tmp_path / name).read_text(), (TINY_VLM_DIR / name).read_text()
        if name.endswith(".json"):
            assert json.loads(fresh) == json.loads(shipped), name
        else:
            assert fresh == shipped, name
    assert sum((TINY_VLM_DIR / n).stat().st_size for n in packaged) < 100_000
