import numpy as np
import pytest

from tmrl_vla.envs.batched import BatchedEnv
from tmrl_vla.envs.pick_cube import PickCubeConfig, PickCubeEnv


def test_batched_reset_step_and_done_flags():
    envs = BatchedEnv(lambda: PickCubeEnv(PickCubeConfig(episode_length=3)), 3)
    obs = envs.reset([0, 1, 2])
    assert obs["observation.images.front"].shape == (3, 64, 64, 3)
    assert obs["observation.state"].shape == (3, 6)
    home = np.stack([envs.envs[0].home_qpos] * 3)
    for _ in range(3):
        obs, rewards, done = envs.step(home)
    assert done.all() and rewards.shape == (3,) and not envs.success.any()
    frozen = obs["observation.images.front"].copy()
    obs, _, _ = envs.step(home)  # finished envs ignore actions and keep their last observation
    assert np.array_equal(obs["observation.images.front"], frozen)
    envs.close()


def test_inactive_envs_are_not_stepped():
    envs = BatchedEnv(lambda: PickCubeEnv(PickCubeConfig(episode_length=2)), 2)
    start = envs.reset([0, 1])["observation.state"].copy()
    home = np.stack([envs.envs[0].home_qpos] * 2) + 0.3
    for _ in range(2):
        obs, _, done = envs.step(home, active=np.array([True, False]))
    assert done.tolist() == [True, False]  # env 1 took no step: its episode is not over
    assert np.array_equal(obs["observation.state"][1], start[1]) and not np.array_equal(
        obs["observation.state"][0], start[0]
    )
    envs.close()


def test_batched_matches_single_env():
    single = PickCubeEnv()
    ref, _ = single.reset(seed=5)
    envs = BatchedEnv(PickCubeEnv, 2)
    obs = envs.reset([4, 5])
    assert np.array_equal(obs["observation.images.front"][1], ref["observation.images.front"])
    with pytest.raises(ValueError, match="one seed per env"):
        envs.reset([1])
    envs.close()
    single.close()
