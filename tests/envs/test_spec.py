"""EnvSpec (tmrl_vla.envs.spec): which registered env a job runs, its options, its label and its factory."""

import dataclasses

import pytest

from tmrl_vla.envs.pick_cube import SHIFTS, PickCubeEnv
from tmrl_vla.envs.registry import UnknownEnvOptionError
from tmrl_vla.envs.spec import EnvSpec
from tmrl_vla.registry import UnknownNameError


def test_default_spec_is_the_unshifted_pick_task_with_no_options():
    spec = EnvSpec()
    assert spec.type == "so100_pick_cube"
    assert spec.kwargs() == {}
    assert spec.label() == "so100_pick_cube"


def test_kwargs_keep_only_the_options_that_are_set():
    assert EnvSpec(shift="dim_light").kwargs() == {"shift": "dim_light"}
    assert EnvSpec(episode_length=6).kwargs() == {"episode_length": 6}
    assert EnvSpec(episode_length=0).kwargs() == {"episode_length": 0}  # set, though falsy


def test_kwargs_merge_the_free_options_after_the_named_ones():
    spec = EnvSpec(shift="moved_camera", episode_length=6, options={"image_size": 32, "cameras": ["front"]})
    assert spec.kwargs() == {"shift": "moved_camera", "episode_length": 6, "image_size": 32, "cameras": ["front"]}
    assert list(spec.kwargs()) == ["shift", "episode_length", "image_size", "cameras"]


def test_an_option_of_the_same_name_overrides_the_field():
    spec = EnvSpec(shift="dim_light", options={"shift": "blue_cube"})
    assert spec.kwargs() == {"shift": "blue_cube"}


def test_kwargs_are_a_fresh_dict_each_time():
    spec = EnvSpec(options={"image_size": 32})
    spec.kwargs()["image_size"] = 99
    assert spec.kwargs() == {"image_size": 32} and spec.options == {"image_size": 32}


def test_label_lists_the_options_that_are_set():
    assert EnvSpec(shift="moved_camera", episode_length=6).label() == (
        "so100_pick_cube (shift=moved_camera, episode_length=6)"
    )
    assert EnvSpec(type="lerobot", options={"env_type": "pusht"}).label() == "lerobot (env_type=pusht)"


def test_specs_are_frozen_and_compare_by_value():
    assert EnvSpec(shift="dim_light") == EnvSpec(shift="dim_light") != EnvSpec(shift="blue_cube")
    with pytest.raises(dataclasses.FrozenInstanceError):
        EnvSpec().shift = "dim_light"


def test_factory_of_an_unknown_type_fails_at_once_with_a_suggestion():
    with pytest.raises(UnknownNameError, match=r"Unknown env 'so100_pick_cub'\. Did you mean 'so100_pick_cube'\?"):
        EnvSpec(type="so100_pick_cub").factory()


def test_factory_of_an_unknown_type_lists_the_known_envs():
    with pytest.raises(UnknownNameError, match=r"Known envs: .*so100_pick_cube"):
        EnvSpec(type="mujoco_soccer").factory()


def test_factory_builds_a_pick_env_with_the_shift_and_options_applied():
    make = EnvSpec(shift="moved_camera", episode_length=6, options={"image_size": 32}).factory()
    env = make()
    try:
        assert isinstance(env, PickCubeEnv)
        assert env.config.shift == SHIFTS["moved_camera"] and env.config.shift != SHIFTS["none"]
        assert env.config.episode_length == 6 and env.config.image_size == 32
        obs, _ = env.reset(seed=0)
        assert obs["observation.images.front"].shape == (32, 32, 3)
    finally:
        env.close()


def test_each_call_of_the_factory_builds_a_new_env():
    make = EnvSpec(episode_length=6).factory()
    first, second = make(), make()
    try:
        assert first is not second
        assert first.config == second.config and first.config.shift == SHIFTS["none"]
    finally:
        first.close()
        second.close()


def test_the_factory_keeps_the_options_it_was_made_with():
    spec = EnvSpec(options={"episode_length": 6})
    make = spec.factory()
    spec.options["episode_length"] = 9  # the dict inside a frozen spec can still be mutated
    env = make()
    try:
        assert env.config.episode_length == 6
    finally:
        env.close()


def test_an_unknown_option_fails_at_the_first_env_naming_the_envs_options():
    make = EnvSpec(options={"image_sise": 32}).factory()  # no error yet: the type is known
    with pytest.raises(UnknownEnvOptionError) as err:
        make()
    message = str(err.value)
    assert "Env 'so100_pick_cube' does not take the option(s) 'image_sise'." in message
    assert "Did you mean 'image_size' for 'image_sise'?" in message
    assert "Options it takes: image_size, cameras, episode_length," in message
    assert isinstance(err.value, TypeError)


def test_an_unknown_shift_fails_at_the_first_env_listing_the_shifts():
    make = EnvSpec(shift="purple_cube").factory()
    with pytest.raises(ValueError, match=r"Unknown context shift 'purple_cube'; known: .*moved_camera"):
        make()
