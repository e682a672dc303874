"""Loading a LeRobot policy checkpoint with its processors, with errors a user can act on.

A LeRobot checkpoint directory holds ``config.json``, ``model.safetensors`` and the processor
pipelines (``policy_preprocessor.json``, ``policy_postprocessor.json`` and their state files, which
carry the normalisation statistics). Without the statistics a policy silently runs on raw joint
values and fails in ways that look like bad training, so we refuse such checkpoints up front.
"""

from __future__ import annotations

import json
from pathlib import Path

from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.factory import get_policy_class, make_pre_post_processors
from lerobot.utils.constants import ACTION, OBS_STATE

import tmrl_vla.policy.processor_tmrl  # noqa: F401  (registers the portable tokenizer step saved processors name)
from tmrl_vla.hub import resolve_dir
from tmrl_vla.models.tiny_smolvla import TINY_VLM_DIR

PROCESSOR_FILES = ("policy_preprocessor.json", "policy_postprocessor.json")


class CheckpointError(ValueError):
    """A policy checkpoint is incomplete or does not fit the environment."""


def check_checkpoint(path: str | Path) -> Path:
    """Raise :class:`CheckpointError` naming what is missing from a LeRobot checkpoint directory."""
    path = Path(path)
    absent = [name for name in ("config.json", *PROCESSOR_FILES) if not (path / name).is_file()]
    if "config.json" in absent:
        raise CheckpointError(f"{path} is not a LeRobot policy checkpoint: config.json is missing")
    if absent:
        raise CheckpointError(
            f"Policy checkpoint {path} has no processor pipeline ({', '.join(absent)} missing), so it carries no "
            "normalisation statistics. Save the processors next to the weights (as lerobot-train does) or pass "
            "dataset_stats when building them."
        )
    spec = json.loads((path / "policy_preprocessor.json").read_text())
    normalizers = [s for s in spec.get("steps", []) if "normalizer" in str(s.get("registry_name", ""))]
    if not normalizers:
        raise CheckpointError(f"Policy checkpoint {path}: the preprocessor has no normaliser step")
    for step in normalizers:
        state = step.get("state_file")
        if not state or not (path / state).is_file():
            raise CheckpointError(
                f"Policy checkpoint {path}: normalisation statistics file {state!r} is missing; "
                "the policy cannot be run without the statistics it was trained with."
            )
    return path


def load_lerobot_policy(name_or_path: str | Path, *, device: str = "cpu", revision: str | None = None):
    """(policy, preprocessor, postprocessor) from a LeRobot checkpoint: a local directory or a Hub
    repo id (with ``revision``; from the local Hub cache when offline).

    The policy's config records the name as given (``pretrained_path``) and the revision
    (``pretrained_revision``): a CSP adapter trained on it names its base that way, so it can be
    rebuilt where the adapter is loaded.
    """
    path = check_checkpoint(resolve_dir(name_or_path, revision=revision))
    if json.loads((path / "config.json").read_text()).get("type") == "tmrl":
        raise CheckpointError(
            f"{name_or_path} is a fine-tuned tmrl agent, not a policy to fine-tune: run it as it is "
            "(lerobot-eval --policy.path=...), or pass the VLA it steers (its config's base_policy)"
        )
    config = PreTrainedConfig.from_pretrained(path)
    config.device = device
    vlm = getattr(config, "vlm_model_name", None)
    if vlm and Path(vlm).name == TINY_VLM_DIR.name and not Path(vlm).is_dir():
        # The packaged tiny backbone moved (another venv or machine): point at this install's copy.
        config.vlm_model_name = str(TINY_VLM_DIR)
    policy = get_policy_class(config.type).from_pretrained(path, config=config)
    policy.config.pretrained_path, policy.config.pretrained_revision = str(name_or_path), revision
    policy.to(device).eval()
    overrides = {"device_processor": {"device": device}}
    # LeRobot's tokenizer step names its tokenizer as saved (a path where the base was trained); a
    # portable step (tmrl_vla.policy.processor_tmrl) finds the packaged one itself
    steps = json.loads((path / PROCESSOR_FILES[0]).read_text()).get("steps", [])
    has_tokenizer = any(s.get("registry_name") == "tokenizer_processor" for s in steps)
    vlm_overrides = {"tokenizer_processor": {"tokenizer_name": config.vlm_model_name}} if vlm and has_tokenizer else {}
    preprocessor, postprocessor = make_pre_post_processors(
        config, pretrained_path=str(path), preprocessor_overrides={**overrides, **vlm_overrides}
    )
    return policy, preprocessor, postprocessor


def check_image_resolution(policy_config, observation_space) -> None:
    """Raise if the env's camera images do not match what the policy was configured for."""
    for key, feature in policy_config.image_features.items():
        if key not in observation_space.spaces:
            raise CheckpointError(
                f"The policy expects camera {key!r} but the env provides {sorted(observation_space.spaces)}"
            )
        h, w, _ = observation_space[key].shape
        if tuple(feature.shape[1:]) != (h, w):
            raise CheckpointError(
                f"Image resolution mismatch for {key}: the policy was configured for {tuple(feature.shape[1:])} "
                f"(C, H, W = {tuple(feature.shape)}) but the env renders {(h, w)}. Set the env's image_size to match."
            )


def check_dataset_fits(policy_config, preprocessor, meta, name: str) -> None:
    """Raise :class:`CheckpointError` unless the dataset ``meta`` gives the policy what it reads and
    predicts (cameras, state, action of the same widths) and the policy's own normaliser holds the
    statistics for them: LeRobot's normaliser passes a feature it has no statistics for through
    unchanged, and a policy then trains on raw joint values without a word."""
    features = meta.features
    cameras = set(meta.camera_keys)
    missing = sorted(set(policy_config.image_features) - cameras)
    if missing:
        raise CheckpointError(
            f"The dataset {name} lacks the policy's cameras {missing} (it has {sorted(cameras)}); CSP trains on "
            "the cameras the policy reads. Record them, or rename the dataset's keys to the policy's."
        )
    wanted = {OBS_STATE: policy_config.robot_state_feature, ACTION: policy_config.action_feature}
    for key, feature in wanted.items():
        if feature is None:
            continue
        if key not in features:
            raise CheckpointError(f"The dataset {name} has no {key!r} feature, which the policy needs")
        have, need = tuple(features[key]["shape"]), tuple(feature.shape)
        if have != need:
            raise CheckpointError(
                f"{key} dimension mismatch: the dataset {name} has {have}, the policy was configured for {need}"
            )
    for step in getattr(preprocessor, "steps", []):
        stats, norm_map = getattr(step, "stats", None), getattr(step, "norm_map", None)
        if norm_map is None:
            continue
        for key, feature in wanted.items():
            mode = norm_map.get(feature.type) if feature is not None else None
            if mode is not None and mode.value != "IDENTITY" and key not in (stats or {}):
                raise CheckpointError(
                    f"The policy's normaliser has no statistics for {key!r} ({mode.value} normalisation), so it "
                    "would pass raw values through. Save the processors with the statistics the policy was "
                    "trained with."
                )
