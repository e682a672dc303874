import numpy as np
import pytest

from tmrl_vla.envs.expert import ExpertConfig, ScriptedExpert
from tmrl_vla.envs.pick_cube import PickCubeConfig, PickCubeEnv


def run_expert(env, expert, seed):
    env.reset(seed=seed)
    expert.reset(env)
    actions = []
    for _ in range(env.config.episode_length):
        actions.append(expert.act(env))
        _, _, terminated, truncated, info = env.step(actions[-1])
        if terminated or truncated:
            break
    return info["is_success"], np.array(actions)


@pytest.mark.parametrize("shift", ["none", "moved_camera", "green_cube"])
def test_expert_solves_the_task_and_its_shift(shift):
    env = PickCubeEnv(PickCubeConfig.with_shift(shift))
    expert = ScriptedExpert(seed=0)
    assert all(run_expert(env, expert, seed)[0] for seed in range(5))
    env.close()


def test_demos_are_varied_not_replayed():
    env = PickCubeEnv()
    expert = ScriptedExpert(ExpertConfig(), seed=0)
    _, a = run_expert(env, expert, seed=1)
    _, b = run_expert(env, expert, seed=1)  # same cube, new speed and noise draws
    assert len(a) != len(b) or not np.allclose(a, b)
    env.close()


def test_expert_config_validation():
    with pytest.raises(ValueError):
        ExpertConfig(speed_range=(1.2, 0.8))
    with pytest.raises(ValueError):
        ExpertConfig(action_noise=-1)
