"""Environments: the default SO-100-like pick task, LeRobot's own envs, batched rollouts.

Importing this package selects a headless GL backend for MuJoCo (see ``headless``) and fills the
env registry.
"""

from tmrl_vla.envs import headless  # noqa: F401, I001  (before anything imports mujoco)
from tmrl_vla.envs import pick_cube  # noqa: F401  (registers so100_pick_cube)
from tmrl_vla.envs import lerobot_adapter  # noqa: F401  (registers lerobot)
from tmrl_vla.envs import gym_hil  # noqa: F401  (registers gym_hil_pick_cube and lerobot's gym_manipulator builder)
from tmrl_vla.envs.registry import ENVS, make_env

__all__ = ["ENVS", "make_env"]
