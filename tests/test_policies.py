import json
import shutil

import gymnasium as gym
import numpy as np
import pytest

from tmrl_vla.models.tiny_smolvla import make_tiny_smolvla
from tmrl_vla.policies import CheckpointError, check_checkpoint, check_image_resolution, load_lerobot_policy


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch
    from lerobot.policies.factory import make_pre_post_processors

    path = tmp_path_factory.mktemp("ckpt")
    policy = make_tiny_smolvla()
    stats = {
        "observation.state": {"mean": torch.zeros(6), "std": torch.ones(6)},
        "action": {"mean": torch.zeros(6), "std": torch.ones(6)},
    }
    pre, post = make_pre_post_processors(policy.config, dataset_stats=stats)
    policy.save_pretrained(path)
    pre.save_pretrained(path)
    post.save_pretrained(path)
    return path


def test_loads_policy_with_processors_and_runs(checkpoint):
    from tmrl_vla.rollout import LeRobotChunkPolicy

    runner = LeRobotChunkPolicy(*load_lerobot_policy(checkpoint))
    assert runner.policy.config.type == "smolvla"
    obs = {"observation.images.front": np.zeros((2, 64, 64, 3), np.uint8), "observation.state": np.zeros((2, 6))}
    chunk = runner(obs, "pick up the cube")
    assert chunk.shape == (2, 10, 6) and np.isfinite(chunk).all()


def copy_without(src, dst, *names):
    shutil.copytree(src, dst)
    for name in names:
        (dst / name).unlink()
    return dst


def test_missing_processors_means_missing_stats(checkpoint, tmp_path):
    broken = copy_without(checkpoint, tmp_path / "c", "policy_preprocessor.json")
    with pytest.raises(CheckpointError, match="normalisation statistics"):
        check_checkpoint(broken)


def test_missing_stats_file(checkpoint, tmp_path):
    spec = json.loads((checkpoint / "policy_preprocessor.json").read_text())
    state = next(s["state_file"] for s in spec["steps"] if "state_file" in s)
    broken = copy_without(checkpoint, tmp_path / "c", state)
    with pytest.raises(CheckpointError, match="statistics file"):
        load_lerobot_policy(broken)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        check_checkpoint(tmp_path)


def test_image_resolution_mismatch(checkpoint):
    policy, _, _ = load_lerobot_policy(checkpoint)
    space = gym.spaces.Dict({"observation.images.front": gym.spaces.Box(0, 255, (96, 96, 3), np.uint8)})
    with pytest.raises(CheckpointError, match="resolution mismatch"):
        check_image_resolution(policy.config, space)
    ok = gym.spaces.Dict({"observation.images.front": gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)})
    check_image_resolution(policy.config, ok)
    with pytest.raises(CheckpointError, match="expects camera"):
        check_image_resolution(policy.config, gym.spaces.Dict({}))
