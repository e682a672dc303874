"""LeRobot plugin entry point: importing it registers the ``so100_pick_cube`` env type with LeRobot.

LeRobot imports this module by its distribution name (``register_third_party_plugins``); the env
config and its vector envs live in :mod:`tmrl_vla.envs.lerobot_env`.
"""

from tmrl_vla.envs.lerobot_env import SO100PickCubeEnvConfig

__all__ = ["SO100PickCubeEnvConfig"]
