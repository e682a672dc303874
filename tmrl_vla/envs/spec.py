"""``EnvSpec``: which registered env a job fine-tunes on, with its options, as a config.

The job never looks at the type: every option that is set goes to the env's factory in the registry
(:func:`tmrl_vla.envs.registry.make_env`), which names the options it takes when given one it does
not. On the command line: ``--env.type=so100_pick_cube --env.shift=dim_light``; options without a
field of their own go in ``--env.options='{image_size: 96}'``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from tmrl_vla.envs.registry import ENVS, make_env


@dataclass(frozen=True)
class EnvSpec:
    type: str = "so100_pick_cube"  # a registered env (tmrl_vla.envs.ENVS)
    shift: str | None = None  # a named context shift, for envs that have them (so100_pick_cube: SHIFTS)
    episode_length: int | None = None  # control steps per episode; None: the env's default
    options: dict[str, Any] = field(default_factory=dict)  # any other option of the env's factory

    def kwargs(self) -> dict[str, Any]:
        """The options that are set, as the factory's keyword arguments."""
        named = {"shift": self.shift, "episode_length": self.episode_length}
        return {**{k: v for k, v in named.items() if v is not None}, **self.options}

    def factory(self) -> Callable[[], gym.Env]:
        """A no-argument env factory (an unknown type fails here, an unknown option at the first env)."""
        ENVS.get(self.type)
        kwargs = self.kwargs()
        return lambda: make_env(self.type, **kwargs)

    def label(self) -> str:
        """``type (option=value, ...)`` for logs and reports."""
        options = ", ".join(f"{k}={v}" for k, v in self.kwargs().items())
        return f"{self.type} ({options})" if options else self.type
