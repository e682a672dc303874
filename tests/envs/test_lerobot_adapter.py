"""LeRobot's envs behind our registry (``lerobot_adapter``): error messages and the observation adapter.

The adapter tests use a small fake env, so they need neither LeRobot's simulators nor a GL context.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from tmrl_vla.envs import ENVS, make_env
from tmrl_vla.envs.lerobot_adapter import LeRobotEnvAdapter, MissingEnvPackageError
from tmrl_vla.registry import UnknownNameError


def test_entry_registered() -> None:
    assert "lerobot" in ENVS


# ------------------------------------------------------------------------------- errors
def test_unknown_env_type_lists_known_types_and_suggests_close_match() -> None:
    pytest.importorskip("lerobot.envs.configs")
    with pytest.raises(UnknownNameError) as err:
        make_env("lerobot", env_type="pushtt")
    message = str(err.value)
    assert "Did you mean 'pusht'?" in message
    for known in ("aloha", "pusht", "libero", "metaworld", "gym_manipulator"):
        assert known in message


def test_unknown_config_field_suggests_close_match() -> None:
    pytest.importorskip("lerobot.envs.configs")
    with pytest.raises(UnknownNameError, match="Did you mean 'obs_type'"):
        make_env("lerobot", env_type="pusht", obs_tpye="pixels_agent_pos")


@pytest.mark.skipif(importlib.util.find_spec("gym_pusht") is not None, reason="gym_pusht is installed")
def test_missing_simulator_names_the_pip_extra() -> None:
    pytest.importorskip("lerobot.envs.configs")
    with pytest.raises(ImportError) as err:
        make_env("lerobot", env_type="pusht")
    assert isinstance(err.value, MissingEnvPackageError)
    assert 'pip install "lerobot[pusht]"' in str(err.value)


# ------------------------------------------------------------------------------ adapter
class _FakeEnv(gym.Env):
    """Emits observations shaped like a LeRobot env's raw ones (nested dicts, ``pixels``...)."""

    def __init__(self, space: gym.spaces.Dict, info: dict[str, Any] | None = None) -> None:
        self.observation_space = space
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self._info = info or {}
        self.last_raw: Any = None

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.last_raw = self.observation_space.sample()
        return self.last_raw, dict(self._info)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self.last_raw = self.observation_space.sample()
        return self.last_raw, 0.0, False, False, dict(self._info)


def _image(size: int = 8) -> gym.spaces.Box:
    return gym.spaces.Box(0, 255, (size, size, 3), np.uint8)


def test_adapter_single_camera_env_like_pusht() -> None:
    space = gym.spaces.Dict(
        {
            "pixels": _image(),
            "agent_pos": gym.spaces.Box(-1, 1, (2,), np.float64),
            "environment_state": gym.spaces.Box(-1, 1, (4,)),
        }
    )
    features_map = {"action": "action", "agent_pos": "observation.state", "pixels": "observation.image"}
    env = LeRobotEnvAdapter(_FakeEnv(space), features_map, config_task="PushT-v0")
    obs, info = env.reset(seed=0)
    assert set(obs) == {"observation.images.image", "observation.state", "observation.environment_state"}
    assert obs["observation.images.image"].dtype == np.uint8 and obs["observation.images.image"].shape == (8, 8, 3)
    assert obs["observation.state"].dtype == np.float32 and obs["observation.state"].shape == (2,)
    assert env.observation_space.contains(obs)
    assert info == {"is_success": False}  # the fake env reports nothing
    assert env.task == "PushT-v0"


def test_adapter_concatenates_state_parts_in_features_map_order() -> None:
    space = gym.spaces.Dict(
        {
            "pixels": gym.spaces.Dict({"agentview": _image(), "wrist": _image()}),
            "robot_state": gym.spaces.Dict(
                {"eef": gym.spaces.Dict({"pos": gym.spaces.Box(-1, 1, (3,))}), "joints": gym.spaces.Box(-1, 1, (7,))}
            ),
        }
    )
    features_map = {
        "robot_state/joints": "observation.state.joint_pos",
        "robot_state/eef/pos": "observation.state.eef_pos",
        "pixels/agentview": "observation.images.image",
        "pixels/wrist": "observation.images.image2",
    }
    fake = _FakeEnv(space, info={"succeed": True})
    env = LeRobotEnvAdapter(fake, features_map, instruction="open the drawer")
    obs, info = env.reset(seed=0)
    raw = fake.last_raw
    assert set(obs) == {"observation.images.image", "observation.images.image2", "observation.state"}
    expected = np.concatenate([raw["robot_state"]["joints"], raw["robot_state"]["eef"]["pos"]]).astype(np.float32)
    np.testing.assert_array_equal(obs["observation.state"], expected)
    assert env.observation_space["observation.state"].shape == (10,)
    assert info["is_success"] is True  # gym-hil's "succeed" counts
    assert env.task == "open the drawer"


class _FakePushT(gym.Env):
    """Stands in for gym_pusht's env, taking the kwargs LeRobot's PushtEnv config passes to gym.make."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, obs_type: str, render_mode: str, visualization_width: int, visualization_height: int) -> None:
        self.init_kwargs = {"obs_type": obs_type, "render_mode": render_mode, "width": visualization_width}
        self.observation_space = gym.spaces.Dict({"pixels": _image(16), "agent_pos": gym.spaces.Box(0, 512, (2,))})
        self.action_space = gym.spaces.Box(0, 512, (2,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        return self.observation_space.sample(), 0.5, False, False, {"is_success": True}


@pytest.fixture
def fake_pusht_registered() -> Iterator[str]:
    """Registers the gym id LeRobot's pusht config builds, so the gym.make path runs without gym_pusht."""
    pytest.importorskip("lerobot.envs.configs")
    from gymnasium.envs.registration import register, registry

    gym_id = "gym_pusht/PushT-v0"
    if gym_id in registry:
        pytest.skip("gym_pusht is installed; its real env would be shadowed")
    register(id=gym_id, entry_point=_FakePushT)
    yield gym_id
    del registry[gym_id]


def test_generic_adapter_builds_through_lerobot_config(fake_pusht_registered: str) -> None:
    env = make_env("lerobot", env_type="pusht", episode_length=5, gym_kwargs={"visualization_width": 99})
    assert isinstance(env.unwrapped, _FakePushT)
    # Config fields reach the env through the config's gym_kwargs; our gym_kwargs override them.
    assert env.unwrapped.init_kwargs == {"obs_type": "pixels_agent_pos", "render_mode": "rgb_array", "width": 99}
    obs, info = env.reset(seed=0)
    assert set(obs) == {"observation.images.image", "observation.state"}
    assert info["is_success"] is False
    assert env.task == "PushT-v0"  # the config's task: pusht has no language instruction
    for _ in range(5):
        *_, truncated, info = env.step(env.action_space.sample())
    assert info["is_success"] is True
    assert truncated  # episode_length became gym.make's max_episode_steps
    env.close()
