"""make_env checks options against the env factory's signature before calling it."""

from __future__ import annotations

import gymnasium as gym
import pytest

import tmrl_vla.envs.registry as env_registry
from tmrl_vla.envs.registry import UnknownEnvOptionError, make_env
from tmrl_vla.registry import Registry


class _Built(gym.Env):
    def __init__(self, **options) -> None:
        self.options = options


@pytest.fixture
def envs(monkeypatch: pytest.MonkeyPatch) -> Registry:
    """A registry of its own in place of the library's, so test factories do not leak into ENVS."""
    reg: Registry = Registry("env")

    @reg.register("narrow")
    def make_narrow(image_size: int = 64, *, fast_render: bool = True) -> gym.Env:
        return _Built(image_size=image_size, fast_render=fast_render)

    @reg.register("open")
    def make_open(image_size: int = 64, **gym_kwargs) -> gym.Env:
        return _Built(image_size=image_size, **gym_kwargs)

    @reg.register("bare")
    def make_bare() -> gym.Env:
        return _Built()

    monkeypatch.setattr(env_registry, "ENVS", reg)
    return reg


def test_known_options_reach_the_factory(envs: Registry) -> None:
    env = make_env("narrow", image_size=32, fast_render=False)
    assert env.options == {"image_size": 32, "fast_render": False}


def test_unknown_option_names_the_env_and_the_options_it_takes(envs: Registry) -> None:
    with pytest.raises(UnknownEnvOptionError) as err:
        make_env("narrow", image_size=32, fast_rendr=False)
    message = str(err.value)
    assert "'narrow'" in message and "'fast_rendr'" in message
    assert "Did you mean 'fast_render'" in message
    assert "Options it takes: image_size, fast_render." in message
    assert isinstance(err.value, TypeError)  # what calling the factory directly would raise


def test_factory_without_options_says_so(envs: Registry) -> None:
    with pytest.raises(UnknownEnvOptionError, match=r"'bare'.*Options it takes: \(none\)"):
        make_env("bare", seed=0)


def test_factory_with_var_kwargs_accepts_anything(envs: Registry) -> None:
    env = make_env("open", reward_type="dense")
    assert env.options == {"image_size": 64, "reward_type": "dense"}


def test_library_envs_still_build_through_make_env() -> None:
    """The real registry: the check passes the library's own factories their options."""
    env = make_env("so100_pick_cube", shift="none")
    try:
        obs, _ = env.reset(seed=0)
        assert "observation.state" in obs
    finally:
        env.close()
