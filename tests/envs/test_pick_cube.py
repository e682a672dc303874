import numpy as np
import pytest

from tmrl_vla.envs import ENVS, make_env
from tmrl_vla.envs.pick_cube import JOINT_NAMES, SHIFTS, ContextShift, PickCubeConfig, PickCubeEnv


@pytest.fixture
def env():
    e = PickCubeEnv()
    yield e
    e.close()


def test_observation_keys_shapes_dtypes(env):
    obs, info = env.reset(seed=0)
    assert set(obs) == {"observation.images.front", "observation.state"}
    assert obs["observation.images.front"].shape == (64, 64, 3)
    assert obs["observation.images.front"].dtype == np.uint8
    assert obs["observation.state"].shape == (len(JOINT_NAMES),)
    assert obs["observation.state"].dtype == np.float32
    assert info == {"is_success": False}
    assert env.observation_space.contains(obs)
    assert env.task == "pick up the cube"


def test_wrist_camera_and_image_size():
    e = PickCubeEnv(PickCubeConfig(cameras=("front", "wrist"), image_size=32))
    obs, _ = e.reset(seed=0)
    assert obs["observation.images.wrist"].shape == (32, 32, 3)
    assert obs["observation.images.front"].shape == (32, 32, 3)
    e.close()


def test_seed_makes_episodes_repeatable(env):
    a, _ = env.reset(seed=7)
    cube_a = env.cube_pos()
    np.random.seed(123)  # the global RNG must not matter
    b, _ = env.reset(seed=7)
    assert np.array_equal(cube_a, env.cube_pos())
    assert np.array_equal(a["observation.images.front"], b["observation.images.front"])
    env.reset(seed=8)
    assert not np.array_equal(cube_a, env.cube_pos())


def test_cube_placed_inside_region(env):
    cfg = env.config
    for seed in range(20):
        env.reset(seed=seed)
        x, y, _ = env.cube_pos()
        assert cfg.cube_x_range[0] <= x <= cfg.cube_x_range[1]
        assert cfg.cube_y_range[0] <= y <= cfg.cube_y_range[1]


def test_holding_still_truncates_without_reward(env):
    env.reset(seed=0)
    for _t in range(env.config.episode_length):
        _, reward, terminated, truncated, info = env.step(env.home_qpos)
        assert reward == 0.0 and not terminated and not info["is_success"]
    assert truncated


def test_bad_actions_are_rejected(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(5))
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.full(6, np.nan))


def test_shift_changes_pixels_not_state():
    base, green = PickCubeEnv(), PickCubeEnv(PickCubeConfig.with_shift("green_cube"))
    obs_b, _ = base.reset(seed=3)
    obs_g, _ = green.reset(seed=3)
    assert np.array_equal(base.cube_pos(), green.cube_pos())
    assert np.array_equal(obs_b["observation.state"], obs_g["observation.state"])
    assert not np.array_equal(obs_b["observation.images.front"], obs_g["observation.images.front"])
    base.close()
    green.close()


@pytest.mark.parametrize("shift", sorted(SHIFTS))
def test_every_named_shift_builds(shift):
    e = make_env("so100_pick_cube", shift=shift)
    obs, _ = e.reset(seed=0)
    assert obs["observation.images.front"].shape == (64, 64, 3)
    e.close()


def test_unknown_env_and_shift_names():
    assert "so100_pick_cube" in ENVS
    with pytest.raises(KeyError, match="Did you mean 'so100_pick_cube'"):
        make_env("so100_pick")
    with pytest.raises(ValueError, match="green_cube"):
        PickCubeConfig.with_shift("grene_cube")


def test_config_validation():
    with pytest.raises(ValueError, match="cameras"):
        PickCubeConfig(cameras=("top",))
    with pytest.raises(ValueError, match="cube_x_range"):
        PickCubeConfig(cube_x_range=(0.3, 0.1))


@pytest.mark.parametrize(
    "shift",
    [
        ContextShift(camera_roll=20.0),
        ContextShift(table_rgba=(0.18, 0.2, 0.24, 1.0)),
        ContextShift(light_rgb=(1.0, 0.6, 0.3)),
        ContextShift(camera_offset=(0.0, -0.04, 0.02)),
    ],
    ids=["roll", "table", "light", "camera_left"],
)
def test_the_new_kinds_of_shift_change_pixels_only(shift):
    base, shifted = PickCubeEnv(), PickCubeEnv(PickCubeConfig(shift=shift))
    obs_b, _ = base.reset(seed=4)
    obs_s, _ = shifted.reset(seed=4)
    assert np.array_equal(base.cube_pos(), shifted.cube_pos())
    assert np.array_equal(obs_b["observation.state"], obs_s["observation.state"])
    assert np.abs(obs_b["observation.images.front"].astype(int) - obs_s["observation.images.front"]).mean() > 1.0
    base.close()
    shifted.close()


def test_defaults_of_the_new_fields_leave_the_demo_world_unchanged():
    """The scene file's own table colour and light: the demos' pixels do not move."""
    from tmrl_vla.envs.pick_cube import TABLE

    explicit = ContextShift(camera_roll=0.0, table_rgba=TABLE, light_rgb=(1.0, 1.0, 1.0), cube_scale=1.0)
    a, b = PickCubeEnv(), PickCubeEnv(PickCubeConfig(shift=explicit))
    assert np.array_equal(
        a.reset(seed=1)[0]["observation.images.front"], b.reset(seed=1)[0]["observation.images.front"]
    )
    a.close()
    b.close()


def test_a_smaller_cube_rests_on_the_table_and_the_expert_still_lifts_it():
    from tmrl_vla.envs.expert import expert_success

    env = PickCubeEnv(PickCubeConfig.with_shift("small_cube"))
    env.reset(seed=0)
    assert env.cube_pos()[2] == pytest.approx(0.02 * 0.5)
    for _ in range(20):
        env.step(env.home_qpos)
    assert env.cube_pos()[2] == pytest.approx(0.02 * 0.5, abs=1e-3)  # it did not sink or fall
    env.close()
    assert sum(expert_success(PickCubeConfig.with_shift("small_cube"), 3)) == 3


def test_the_new_fields_are_validated():
    with pytest.raises(ValueError, match="no longer fits the open gripper"):
        ContextShift(cube_scale=1.2)
    with pytest.raises(ValueError, match="table_rgba must be 4 values"):
        ContextShift(table_rgba=(2.0, 0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="light_rgb must be 3 values"):
        ContextShift(light_rgb=(1.0, -0.5, 1.0))
