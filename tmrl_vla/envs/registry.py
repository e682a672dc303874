"""The env registry: every environment the library can build, by name.

Each entry is a factory ``f(**kwargs) -> gymnasium.Env`` whose observations follow LeRobot's
naming (``observation.images.<camera>`` HxWx3 uint8, ``observation.state`` float32) and whose
``info`` carries ``is_success``. Register new envs with ``@ENVS.register("name")``.

:func:`make_env` checks the options against the factory's signature before calling it: options
usually come from a config file or the command line, and a misspelt one should fail with the env's
name and its options, not with a TypeError from wherever the factory passes it on.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from tmrl_vla.registry import Registry

EnvFactory = Callable[..., gym.Env]
ENVS: Registry[EnvFactory] = Registry("env")


class UnknownEnvOptionError(TypeError):
    """An option the env's factory does not take; the message names the env and the options it takes.

    A TypeError, like the one calling the factory directly would raise.
    """


def _option_names(factory: EnvFactory) -> list[str] | None:
    """The keyword options ``factory`` takes, or None when it takes any (``**kwargs``) or cannot be inspected."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # some builtins and C extensions have no signature
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters if p.kind in keyword]


def check_env_options(name: str, factory: EnvFactory, options: dict[str, Any]) -> None:
    """Raise :class:`UnknownEnvOptionError` if ``factory`` (the env ``name``) does not take every option."""
    known = _option_names(factory)
    if known is None:
        return
    unknown = [key for key in options if key not in known]
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1)
        if close:
            hints.append(f" Did you mean {close[0]!r} for {key!r}?")
    takes = ", ".join(known) if known else "(none)"
    raise UnknownEnvOptionError(
        f"Env {name!r} does not take the option(s) {', '.join(map(repr, unknown))}.{''.join(hints)} "
        f"Options it takes: {takes}."
    )


def make_env(name: str, **kwargs: Any) -> gym.Env:
    """Build the env registered as ``name``; unknown names list the known ones, and options the
    env's factory does not take list the ones it does (:class:`UnknownEnvOptionError`)."""
    factory = ENVS.get(name)
    check_env_options(name, factory, kwargs)
    return factory(**kwargs)
