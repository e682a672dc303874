import numpy as np

from tmrl_vla.coverage import CoverageResult, success_at_k
from tmrl_vla.envs.pick_cube import PickCubeConfig, PickCubeEnv


def test_success_at_k_is_cumulative_per_state():
    # 3 rollouts (rows) x 4 states (columns)
    res = CoverageResult(successes=np.array([[1, 0, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]], dtype=bool))
    assert res.success_at_k.tolist() == [0.25, 0.5, 0.5]
    s = res.summary()
    assert s["success_at_3"] == 0.5 and s["states"] == 4 and s["rollouts_per_state"] == 3
    assert abs(s["per_rollout_success"] - 3 / 12) < 1e-9


def test_every_round_starts_from_the_same_initial_states():
    seen = []

    def policy(obs, task):
        seen.append(obs["observation.state"].copy())
        return np.broadcast_to(PickCubeEnv().home_qpos, (obs["observation.state"].shape[0], 10, 6)).copy()

    res = success_at_k(policy, lambda: PickCubeEnv(PickCubeConfig(episode_length=2)), num_states=3, k=2, num_envs=3)
    assert res.successes.shape == (2, 3) and not res.successes.any()
    assert np.array_equal(seen[0], seen[1])  # the same initial states in both rounds
