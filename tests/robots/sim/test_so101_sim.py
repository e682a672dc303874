"""The simulated SO-101 under LeRobot's unmodified so101_follower: readings, motion, cameras, torque off."""

import builtins
from pathlib import Path

import numpy as np
import pytest

import tmrl_vla.envs  # noqa: F401  (headless GL before mujoco)
from tmrl_vla.robots.sim.registry import running_simulation
from tmrl_vla.robots.sim.so101 import (
    GRIPPER_SPAN,
    SimulatedSO101,
    SimulatedSO101Config,
    joint_to_ticks,
    scene_units,
    ticks_to_joint,
)


@pytest.fixture
def no_prompts(monkeypatch):
    def refuse(*_):
        raise AssertionError("LeRobot asked a question: the simulated arm must connect without a prompt")

    monkeypatch.setattr(builtins, "input", refuse)


@pytest.fixture
def so101(tmp_path, no_prompts):
    from lerobot.robots import make_robot_from_config
    from lerobot.robots.so_follower import SO101FollowerConfig

    from tmrl_vla.robots.sim.config_mujoco_sim_camera import MujocoSimCameraConfig

    sim = SimulatedSO101(SimulatedSO101Config(name="test_sim", shift="none"))
    port = sim.start(seed=3)
    sim.write_calibration(tmp_path, "arm")
    camera = MujocoSimCameraConfig(simulation="test_sim", camera="front", width=64, height=64, fps=25)
    # more read retries than on hardware: the emulated bus is a thread of this test process
    config = SO101FollowerConfig(
        port=port, id="arm", calibration_dir=Path(tmp_path), cameras={"front": camera}, num_read_retries=10
    )
    robot = make_robot_from_config(config)
    try:
        yield sim, robot
    finally:
        if robot.is_connected:
            robot.disconnect()
        sim.stop()


def test_lerobot_reads_the_scene_in_degrees_moves_it_and_leaves_torque_off(so101):
    sim, robot = so101
    robot.connect(calibrate=False)
    assert robot.is_calibrated
    obs = robot.get_observation()
    joints = sim.joint_positions()
    assert [obs[f"{j}.pos"] for j in ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")] == (
        pytest.approx(np.rad2deg(joints[:5]), abs=0.1)
    )
    assert obs["gripper.pos"] == pytest.approx(joints[5] / GRIPPER_SPAN * 100, abs=0.2)
    assert obs["front"].shape == (64, 64, 3) and obs["front"].dtype == np.uint8

    target = {k: v for k, v in obs.items() if k.endswith(".pos")}
    target["shoulder_pan.pos"] += 15.0
    for _ in range(40):  # 1.6 s at 25 Hz
        robot.send_action(target)
        sim._stop.wait(0.04)
    assert robot.get_observation()["shoulder_pan.pos"] == pytest.approx(target["shoulder_pan.pos"], abs=1.0)
    assert all(sim.bus.torque_enabled(i) for i in sim.bus.motor_ids)
    robot.disconnect()
    assert not any(sim.bus.torque_enabled(i) for i in sim.bus.motor_ids)  # torque-safe on exit


def test_the_camera_shows_what_the_scene_env_renders(so101):
    sim, robot = so101
    robot.connect(calibrate=False)
    frame = robot.cameras["front"].async_read(timeout_ms=2000)
    camera = sim.open_camera("front", 64, 64)
    try:
        reference = camera.read()
    finally:
        camera.close()
    # the arm holds still and the cube rests: the same picture, up to a frame's motion
    assert np.abs(frame.astype(int) - reference.astype(int)).mean() < 2.0


def test_success_and_reset_are_the_persons_view_of_the_scene(so101):
    sim, _ = so101
    assert not sim.success()
    before = sim.scene.cube_pos()
    sim.reset_scene(seed=11)
    assert not np.allclose(before[:2], sim.scene.cube_pos()[:2])


def test_tick_conversions_round_trip_and_match_lerobots_degrees():
    for name, value in (("shoulder_pan", 0.7), ("elbow_flex", -0.25), ("gripper", 0.03)):
        assert ticks_to_joint(name, joint_to_ticks(name, value)) == pytest.approx(value, abs=2e-3)
    # LeRobot's DEGREES mode: (ticks - mid) * 360 / 4095 with mid = 2048 under our calibration
    ticks = joint_to_ticks("shoulder_pan", 0.5)
    scale, offset = scene_units()
    assert ((ticks - 2048) * 360 / 4095) * scale[0] + offset[0] == pytest.approx(0.5, abs=2e-3)


def test_cameras_and_lookups_fail_with_what_is_running(tmp_path):
    from tmrl_vla.robots.sim.config_mujoco_sim_camera import MujocoSimCameraConfig
    from tmrl_vla.robots.sim.mujoco_sim_camera import MujocoSimCamera

    with pytest.raises(LookupError, match="no simulation named 'nowhere'"):
        running_simulation("nowhere")
    with pytest.raises(ValueError, match="width and height"):
        MujocoSimCameraConfig(simulation="x")
    sim = SimulatedSO101(SimulatedSO101Config(name="lookup_sim"))
    sim.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            SimulatedSO101(SimulatedSO101Config(name="lookup_sim")).start()
        camera = MujocoSimCamera(MujocoSimCameraConfig(simulation="lookup_sim", camera="wrist", width=8, height=8))
        with pytest.raises(ValueError, match=r"renders the cameras \['front'\], not 'wrist'"):
            camera.connect()
        assert {"type": "mujoco_sim", "simulation": "lookup_sim", "camera": "front"} in MujocoSimCamera.find_cameras()
    finally:
        sim.stop()
