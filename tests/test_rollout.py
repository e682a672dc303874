import numpy as np
import pytest
import torch

from tmrl_vla.envs.pick_cube import PickCubeConfig, PickCubeEnv
from tmrl_vla.rollout import evaluate, obs_to_batch, wilson_interval


class HoldStill:
    """Returns the home pose as every action; records what it was shown."""

    def __init__(self):
        self.home = PickCubeEnv().home_qpos
        self.seen = []

    def __call__(self, obs, task):
        self.seen.append(obs)
        b = obs["observation.state"].shape[0]
        return np.broadcast_to(self.home, (b, 10, 6)).copy()


def test_evaluate_counts_episodes_and_failures():
    policy = HoldStill()
    res = evaluate(policy, lambda: PickCubeEnv(PickCubeConfig(episode_length=12)), num_episodes=5, num_envs=2, n_exec=5)
    assert res.n == 5 and res.success_rate == 0.0
    assert res.episode_steps == [12] * 5
    lo, hi = res.ci95
    assert lo == 0.0 and 0.4 < hi < 0.6
    assert len(policy.seen) == 3 * 3  # 3 groups x ceil(12 / 5) chunks


def test_swap_images_feeds_each_env_another_episodes_image():
    policy_plain, policy_swapped = HoldStill(), HoldStill()
    make = lambda: PickCubeEnv(PickCubeConfig(episode_length=1))  # noqa: E731
    evaluate(policy_plain, make, num_episodes=3, num_envs=3)
    evaluate(policy_swapped, make, num_episodes=3, num_envs=3, swap_images=True)
    plain, swapped = policy_plain.seen[0], policy_swapped.seen[0]
    key = "observation.images.front"
    assert np.array_equal(swapped[key][1], plain[key][0]) and np.array_equal(swapped[key][0], plain[key][2])
    assert np.array_equal(swapped["observation.state"], plain["observation.state"])
    with pytest.raises(ValueError):
        evaluate(policy_plain, make, num_episodes=1, num_envs=1, swap_images=True)


def test_obs_to_batch_layout():
    obs = {"observation.images.front": np.full((2, 8, 8, 3), 255, np.uint8), "observation.state": np.zeros((2, 6))}
    batch = obs_to_batch(obs, "pick up the cube")
    assert batch["observation.images.front"].shape == (2, 3, 8, 8)
    assert torch.all(batch["observation.images.front"] == 1.0)
    assert batch["observation.state"].dtype == torch.float32 and batch["task"] == ["pick up the cube"] * 2
    with pytest.raises(ValueError, match="uint8"):
        obs_to_batch({"observation.images.front": np.zeros((2, 3, 8, 8))}, "t")


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(40, 50)
    assert abs(lo - 0.670) < 0.005 and abs(hi - 0.888) < 0.005
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(50, 50)[1] == 1.0 and wilson_interval(0, 50)[0] == 0.0
