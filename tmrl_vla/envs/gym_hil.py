"""gym-hil's Panda pick-cube behind our env registry (``make_env("gym_hil_pick_cube")``).

gym-hil is built through the generic LeRobot path (:mod:`tmrl_vla.envs.lerobot_adapter`, with
LeRobot's ``gym_manipulator`` config and ``name="gym_hil"``): this module registers the builder
that path uses for ``gym_manipulator`` and the ``"gym_hil_pick_cube"`` entry on top of it, which
makes the env fast enough to train on a CPU (:func:`apply_fast_rendering`) and repeatable
(:class:`GlobalNumpySeedWrapper`). It imports the adapter module; the adapter never imports it.

Why gym-hil is not built with LeRobot's ``make_robot_env``: that function needs no teleop device for
gym-hil, but it hard-codes gym-hil's kwargs, so every ``reset`` sleeps gym-hil's default 1 s
(``reset_delay_seconds``), the cube never moves (``random_block_position`` stays False, so the image
carries no information) and the image size cannot be chosen. We read the same config (task, gripper
settings) and call gym-hil's gym id ourselves with those kwargs exposed.

gym-hil and mujoco are imported inside the functions, so ``import tmrl_vla.envs`` stays cheap and
works without them.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import gymnasium as gym
import numpy as np

import tmrl_vla.envs.headless  # noqa: F401  (before the lazy mujoco/gym-hil imports below)
from tmrl_vla.envs.lerobot_adapter import (
    SINGLE_ENV_BUILDERS,
    LeRobotEnvAdapter,
    make_lerobot_env,
    missing_package_error,
    unknown_name_error,
)
from tmrl_vla.envs.registry import ENVS

GYM_HIL_PICK_CUBE_TASK = "pick up the cube"


@SINGLE_ENV_BUILDERS.register("gym_manipulator")
def _gym_hil_env(cfg: Any, gym_kwargs: dict[str, Any]) -> gym.Env:
    """gym-hil through LeRobot's ``gym_manipulator`` config, with the kwargs LeRobot hard-codes freed."""
    if cfg.name != "gym_hil":
        raise ValueError(
            f"gym_manipulator env {cfg.name!r} drives a real robot (it needs a robot and a teleop device); "
            "only name='gym_hil' is a simulator (through make_env: config={'name': 'gym_hil', 'task': "
            "'PandaPickCube-v0'}). Use tmrl_vla's robot integrations for hardware."
        )
    if importlib.util.find_spec("gym_hil") is None:
        raise missing_package_error("gym_manipulator", "gym_hil")
    import gym_hil  # noqa: F401  (registers the gym_hil/* ids)
    from gymnasium.envs.registration import registry

    ids = sorted(i.removeprefix("gym_hil/") for i in registry if i.startswith("gym_hil/"))
    if cfg.task is None or f"gym_hil/{cfg.task}" not in registry:
        raise unknown_name_error("gym_hil task", str(cfg.task), ids)
    gripper = cfg.processor.gripper
    kwargs: dict[str, Any] = {
        "image_obs": True,
        "render_mode": "rgb_array",
        "use_gripper": gripper.use_gripper if gripper is not None else True,
        "gripper_penalty": gripper.gripper_penalty if gripper is not None else 0.0,
        "reset_delay_seconds": 0.0,  # gym-hil sleeps this long in every reset, for human operators
        **gym_kwargs,
    }
    env = gym.make(f"gym_hil/{cfg.task}", disable_env_checker=cfg.disable_env_checker, **kwargs)
    return GlobalNumpySeedWrapper(env)


class GlobalNumpySeedWrapper(gym.Wrapper):
    """Makes envs that sample from numpy's *global* RNG in ``reset`` repeatable under ``reset(seed=...)``.

    gym-hil places the cube with ``np.random.uniform``, ignoring the seed gymnasium passes it, so two
    resets with the same seed give different cubes. This wrapper keeps a private ``RandomState``,
    seeded from ``reset(seed=...)`` exactly as ``np.random.seed(seed)`` would seed the global one,
    swaps it in as the global state for the duration of the inner ``reset`` and swaps the caller's
    global state back afterwards. So: the same seed gives the same episode, unseeded resets continue
    the seeded sequence (gymnasium's convention), and nobody else's use of ``np.random`` is disturbed
    or disturbs us. Not thread-safe: another thread drawing from ``np.random`` during a reset would
    draw from the episode stream.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._episode_rng: np.random.RandomState | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        if seed is not None:
            self._episode_rng = np.random.RandomState(seed)
        elif self._episode_rng is None:
            self._episode_rng = np.random.RandomState()  # fresh OS entropy, like an unseeded gym env
        callers_state = np.random.get_state()
        np.random.set_state(self._episode_rng.get_state())
        try:
            return self.env.reset(seed=seed, options=options)
        finally:
            self._episode_rng.set_state(np.random.get_state())
            np.random.set_state(callers_state)


def apply_fast_rendering(base_env: Any) -> None:
    """Make gym-hil render ~10x faster in software GL, by editing its loaded ``MjModel``.

    Stock, each step renders two 128x128 cameras of a ~198k-triangle scene with 8x multisampling
    and two shadow-casting lights, i.e. three passes over the meshes per camera: about 1 step/s on
    llvmpipe. Here: no shadow maps (``shadowsize=0`` and the scene's shadow flag), no multisampling
    (``offsamples=0``), no reflections (material reflectance and the scene flag). Both lights stay:
    dropping one measured no faster and would darken the scene further.

    ``shadowsize`` and ``offsamples`` size the GL context's framebuffers, which gym-hil creates in
    its constructor, so the renderer is closed and recreated after the model is changed. Frames
    differ from stock gym-hil (no shadows, aliased edges): a policy trained on stock frames sees a
    small visual shift. Relies on gym-hil 0.1.x's ``_viewer``/``_render_specs`` attributes.
    """
    import mujoco

    if not (hasattr(base_env, "_viewer") and hasattr(base_env, "_render_specs")):
        raise TypeError(f"{type(base_env).__name__} is not a gym-hil 0.1.x MuJoCo env (no _viewer/_render_specs)")
    model = base_env.model
    model.vis.quality.shadowsize = 0
    model.vis.quality.offsamples = 0
    model.mat_reflectance[:] = 0.0
    if base_env._viewer is not None:
        base_env._viewer.close()
    spec = base_env._render_specs
    renderer = mujoco.Renderer(model, height=spec.height, width=spec.width)
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
    base_env._viewer = renderer


@ENVS.register("gym_hil_pick_cube")
def make_gym_hil_pick_cube(
    image_size: int = 128,
    random_block_position: bool = True,
    fast_render: bool = True,
    instruction: str = GYM_HIL_PICK_CUBE_TASK,
    **gym_kwargs: Any,
) -> LeRobotEnvAdapter:
    """gym-hil's Panda pick-cube (the second pick task), via LeRobot's ``gym_manipulator`` config.

    Observations: ``observation.images.front`` and ``observation.images.wrist`` (``image_size``
    squared), ``observation.state`` (18: 7 joint positions, 7 joint velocities, gripper command,
    fingertip xyz), the names LeRobot's gym-hil pipeline and datasets use. Actions: 4 values, end-effector
    displacement in [-1, 1]^3 and a gripper command in [0, 2] (1 keeps it, 0 closes, 2 opens). 10 Hz,
    at most 100 steps; success is lifting the cube 10 cm.

    The cube is placed at random by default (gym-hil's default is a fixed spot, which a policy can
    solve blind). Episodes are repeatable under ``reset(seed=...)`` (:class:`GlobalNumpySeedWrapper`).
    ``fast_render`` applies :func:`apply_fast_rendering`. Other ``gym_kwargs`` go to gym-hil
    (``reward_type="dense"``, ``gripper_penalty``, ``ee_step_size``, ...).
    """
    from gym_hil import GymRenderingSpec

    env = make_lerobot_env(
        "gym_manipulator",
        name="gym_hil",
        task="PandaPickCube-v0",
        fps=10,  # gym-hil's control_dt is 0.1 s
        instruction=instruction,
        gym_kwargs={
            "render_spec": GymRenderingSpec(height=image_size, width=image_size),
            "random_block_position": random_block_position,
            **gym_kwargs,
        },
    )
    if fast_render:
        apply_fast_rendering(env.unwrapped)
    return env


def cube_position(env: gym.Env) -> np.ndarray:
    """gym-hil's cube position (privileged state, for tests and scripted experts)."""
    return np.array(env.unwrapped.data.sensor("block_pos").data, dtype=np.float64)
