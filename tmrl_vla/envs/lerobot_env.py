"""The default pick task as a LeRobot env type, so that LeRobot's own CLIs run it unchanged:

    lerobot-eval --policy.path=<policy> --env.type=so100_pick_cube --env.shift=moved_camera

Why a second face of the same env: the project's registry env (:mod:`tmrl_vla.envs.pick_cube`)
returns observations under the policy's key names (``observation.images.<camera>``,
``observation.state``), which is what our own rollouts feed a LeRobot policy. ``lerobot-eval``
instead hard-codes the *raw* key names of its gym packages (``pixels``, a dict camera -> HxWx3
uint8, and ``agent_pos``) in ``preprocess_observation`` and renames them itself. So this module
wraps the unchanged :class:`PickCubeEnv` in those raw names and adds the attributes ``rollout``
reads from every sub-env (``_max_episode_steps``, ``task``, ``task_description``); pixels, state,
seeding, rewards and ``info["is_success"]`` are PickCubeEnv's own.

LeRobot finds the config through its plugin mechanism: ``register_third_party_plugins`` imports
every installed distribution named ``lerobot_env_*``, and ``plugins/lerobot_env_so100_pick_cube``
imports this module, whose ``register_subclass`` adds ``so100_pick_cube`` to ``--env.type``.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from lerobot.configs import FeatureType, PolicyFeature
from lerobot.envs.configs import EnvConfig
from lerobot.envs.utils import freeze_after_episode_end
from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE

import tmrl_vla.envs.headless  # noqa: F401  (before mujoco is first imported)
from tmrl_vla.envs.pick_cube import JOINT_NAMES, SHIFTS, PickCubeConfig, PickCubeEnv, make_so100_pick_cube

ENV_TYPE = "so100_pick_cube"
PIXELS = "pixels"  # raw key lerobot-eval's preprocess_observation turns into observation.images.<camera>
AGENT_POS = "agent_pos"  # raw key it turns into observation.state


class LeRobotPickCube(gym.ObservationWrapper):
    """:class:`PickCubeEnv` with observations as LeRobot's gym packages name them raw:
    ``{"pixels": {camera: HxWx3 uint8}, "agent_pos": float32 joint positions}``."""

    def __init__(self, env: PickCubeEnv) -> None:
        super().__init__(env)
        config = env.unwrapped.config
        images = env.observation_space.spaces
        self.observation_space = gym.spaces.Dict(
            {
                PIXELS: gym.spaces.Dict({cam: images[config.image_key(cam)] for cam in config.cameras}),
                AGENT_POS: images[OBS_STATE],
            }
        )
        # rollout() caps its loop with this; PickCubeEnv truncates itself at the same step.
        self._max_episode_steps = config.episode_length

    @property
    def render_mode(self) -> str:
        # PickCubeEnv.render() always returns the front camera as an HxWx3 array.
        return "rgb_array"

    @property
    def task(self) -> str:
        return self.env.unwrapped.task

    @property
    def task_description(self) -> str:
        # rollout() prefers this over ``task`` as the policy's language instruction.
        return self.env.unwrapped.task

    def observation(self, observation: dict[str, np.ndarray]) -> dict[str, Any]:
        config = self.env.unwrapped.config
        return {
            PIXELS: {cam: observation[config.image_key(cam)] for cam in config.cameras},
            AGENT_POS: observation[OBS_STATE],
        }


def make_lerobot_pick_cube(**options: Any) -> LeRobotPickCube:
    """One env for a LeRobot vector env; ``options`` as :func:`make_so100_pick_cube` takes them.

    Module-level (not a closure) so that AsyncVectorEnv's workers can unpickle it by reference."""
    return LeRobotPickCube(make_so100_pick_cube(**options))


@EnvConfig.register_subclass(ENV_TYPE)
@dataclass
class SO100PickCubeEnvConfig(EnvConfig):
    """``--env.type=so100_pick_cube``: the simulated SO-100 pick task for LeRobot's CLIs."""

    # The language instruction the policy is given (PickCubeConfig.task). LeRobot's default
    # create_envs reads this field as a gym id; ours does not, so it is only the instruction.
    # None gives the task's default instruction.
    task: str | None = "pick up the cube"
    # What the camera sees differently from the demos: a name in tmrl_vla.envs.pick_cube.SHIFTS.
    shift: str = "none"
    episode_length: int = 100  # control steps before the episode is truncated (100 = 4 s at 25 Hz)
    image_size: int = 64  # every camera renders image_size x image_size pixels
    cameras: list[str] = field(default_factory=lambda: ["front"])  # any of "front", "wrist"
    # The env's control rate in Hz. Fixed by the simulation (10 physics steps of 4 ms per control
    # step), so other values are refused; eval videos and recordings read the same rate from the
    # env's metadata (render_fps).
    fps: int = 25

    def __post_init__(self) -> None:
        if self.shift not in SHIFTS:
            close = difflib.get_close_matches(self.shift, list(SHIFTS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"Unknown shift {self.shift!r} for --env.shift.{hint} Known shifts: {', '.join(SHIFTS)}.")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras must not repeat a camera, got {self.cameras}")
        # PickCubeConfig checks image_size, cameras and episode_length with its own messages; fail
        # here, when the command line is parsed, rather than when the first env is built.
        self.pick_cube_config()
        rate = PickCubeEnv.metadata["render_fps"]
        if self.fps != rate:
            raise ValueError(f"fps must be {rate}, the simulation's control rate, got {self.fps}")

        image = PolicyFeature(type=FeatureType.VISUAL, shape=(self.image_size, self.image_size, 3))
        self.features = {
            **{f"{PIXELS}/{cam}": image for cam in self.cameras},
            AGENT_POS: PolicyFeature(type=FeatureType.STATE, shape=(len(JOINT_NAMES),)),
            ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(len(JOINT_NAMES),)),
        }
        self.features_map = {
            **{f"{PIXELS}/{cam}": f"{OBS_IMAGES}.{cam}" for cam in self.cameras},
            AGENT_POS: OBS_STATE,
            ACTION: ACTION,
        }

    def pick_cube_config(self) -> PickCubeConfig:
        """The :class:`PickCubeConfig` of the envs this config builds."""
        options = {k: v for k, v in self.gym_kwargs.items() if k != "shift"}
        return PickCubeConfig.with_shift(self.shift, **options)

    @property
    def gym_kwargs(self) -> dict[str, Any]:
        """The options of :func:`make_so100_pick_cube` (and of the project's ``make_env``)."""
        options: dict[str, Any] = {
            "shift": self.shift,
            "episode_length": self.episode_length,
            "image_size": self.image_size,
            "cameras": tuple(self.cameras),
        }
        if self.task is not None:
            options["task"] = self.task
        return options

    def create_envs(self, n_envs: int, use_async_envs: bool = False) -> dict[str, dict[int, gym.vector.VectorEnv]]:
        """``{"so100_pick_cube": {0: vector env of n_envs}}``, built as LeRobot's base class builds
        its vector envs but from PickCubeEnv instead of ``gym.make``.

        Each sub-env freezes once its episode ends (LeRobot's ``FreezeAfterEpisodeEnd``): rollout()
        steps the whole batch until its slowest member is done, and a finished pick episode would
        otherwise keep simulating and rendering for nothing."""
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        make_one = freeze_after_episode_end(functools.partial(make_lerobot_pick_cube, **self.gym_kwargs))
        env_fns = [make_one] * n_envs
        if use_async_envs and n_envs > 1:
            vec = gym.vector.AsyncVectorEnv(
                env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, context="forkserver"
            )
        else:
            vec = gym.vector.SyncVectorEnv(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        return {self.type: {0: vec}}

    # get_env_processors stays LeRobot's default (identity pipelines): preprocess_observation
    # already turns the raw keys into the policy's, and actions are the policy's joint targets.
