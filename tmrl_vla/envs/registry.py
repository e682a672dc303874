"""The env registry: every environment the library can build, by name.

Each entry is a factory ``f(**kwargs) -> gymnasium.Env`` whose observations follow LeRobot's
naming (``observation.images.<camera>`` HxWx3 uint8, ``observation.state`` float32) and whose
``info`` carries ``is_success``. Register new envs with ``@ENVS.register("name")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym

from tmrl_vla.registry import Registry

EnvFactory = Callable[..., gym.Env]
ENVS: Registry[EnvFactory] = Registry("env")


def make_env(name: str, **kwargs: Any) -> gym.Env:
    """Build the env registered as ``name``; unknown names list the known ones."""
    return ENVS.get(name)(**kwargs)
