"""The Franka robot (``--robot.type=franka_franky``): config and features without franky, the action
safety and the stop sequence against a stand-in franky, and a round trip against franky-sim.

The simulator tests run when franky (``pip install -e '.[franka]'``) and franky-sim
(``bash scripts/franka_sim.sh install``, or ``$FRANKY_SIM`` naming its executable) are there, and
are skipped with that reason otherwise.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from lerobot.cameras.opencv import OpenCVCameraConfig
from lerobot.robots import make_robot_from_config
from lerobot.robots.config import RobotConfig
from lerobot.utils.errors import DeviceNotConnectedError

from tmrl_vla.robots.franka import GRIPPER_DEADBAND, JOINT_LIMIT_MARGIN, JOINT_LIMITS, JOINTS, Franka, FrankaConfig

REPO = Path(__file__).resolve().parents[2]
PLUGIN = "lerobot_robot_franka_franky"
HOME = (0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785)  # franky-sim's initial joint positions
ARM_KEYS = [f"{j}.pos" for j in JOINTS]


def make(tmp_path: Path, **overrides) -> Franka:
    """A robot whose calibration directory (which LeRobot creates) is the test's own."""
    return Franka(FrankaConfig(calibration_dir=tmp_path, **overrides))


def joint_action(q, gripper: float | None = None) -> dict[str, float]:
    action = {k: float(v) for k, v in zip(ARM_KEYS, q, strict=True)}
    if gripper is not None:
        action["gripper.pos"] = gripper
    return action


# --- without franky -------------------------------------------------------------------------


def test_the_type_is_registered_and_lerobot_builds_the_robot(tmp_path):
    assert RobotConfig.get_choice_class("franka_franky") is FrankaConfig
    config = FrankaConfig(calibration_dir=tmp_path)
    assert config.type == "franka_franky"
    robot = make_robot_from_config(config)  # LeRobot finds Franka beside FrankaConfig
    assert isinstance(robot, Franka) and not robot.is_connected and robot.is_calibrated
    assert robot.robot_type == "franka_franky"
    with pytest.raises(DeviceNotConnectedError):
        robot.get_observation()


def test_features_name_seven_joints_the_gripper_and_the_cameras(tmp_path):
    camera = OpenCVCameraConfig(index_or_path=0, fps=30, width=64, height=48)
    robot = make(tmp_path, cameras={"front": camera})
    joints = {f"joint_{i}.pos": float for i in range(1, 8)}
    assert robot.action_features == {**joints, "gripper.pos": float}
    assert robot.observation_features == {**joints, "gripper.pos": float, "front": (48, 64, 3)}
    assert list(robot.observation_features)[:7] == list(joints)  # the state's order is the joints' order
    bare = make(tmp_path, gripper=False)
    assert bare.action_features == joints and bare.observation_features == joints


@pytest.mark.parametrize(
    "field, value",
    [
        ("arm", "ur5"),
        ("dynamics_factor", 0.0),
        ("dynamics_factor", 1.5),
        ("max_relative_target", -0.1),
        ("max_relative_target", {"joint_1": 0.1}),
        ("gripper_speed", 0.0),
    ],
)
def test_bad_configs_are_refused_when_built(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        FrankaConfig(calibration_dir=tmp_path, **{field: value})


def test_without_franky_connect_names_the_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "franky", None)  # import franky now raises ImportError
    robot = make(tmp_path)
    with pytest.raises(ImportError, match=re.escape("pip install 'tmrl_vla[franka]'")):
        robot.connect()
    assert not robot.is_connected


def test_the_module_and_the_config_load_without_franky():
    code = (
        "import sys; sys.modules['franky'] = None\n"
        "from lerobot.robots import make_robot_from_config\n"
        "from tmrl_vla.robots.franka import FrankaConfig\n"
        "import pathlib, tempfile\n"
        "r = make_robot_from_config(FrankaConfig(calibration_dir=pathlib.Path(tempfile.mkdtemp())))\n"
        "print(type(r).__name__, len(r.action_features))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["Franka", "8"]


def test_the_plugin_is_a_lerobot_robot_distribution_that_registers_the_type():
    meta = tomllib.loads((REPO / "plugins" / PLUGIN / "pyproject.toml").read_text())
    # register_third_party_plugins imports every distribution whose name starts with lerobot_robot_.
    assert meta["project"]["name"] == PLUGIN and PLUGIN.startswith("lerobot_robot_")
    assert meta["tool"]["setuptools"]["py-modules"] == [PLUGIN]
    installed = PLUGIN in {d.metadata.get("Name") for d in importlib.metadata.distributions()}
    if installed:
        plugin = importlib.import_module(PLUGIN)
    else:  # not pip-installed here: load the module from its file, as the import would
        spec = importlib.util.spec_from_file_location(PLUGIN, REPO / "plugins" / PLUGIN / f"{PLUGIN}.py")
        plugin = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(plugin)
    assert plugin.FrankaConfig is RobotConfig.get_choice_class("franka_franky")


# --- against a stand-in franky: what is sent, and how the arm is stopped ---------------------


class FakeFuture:
    def __init__(self, result: bool = True) -> None:
        self.done, self.result = False, result

    def wait(self, timeout=None) -> bool:
        return self.done

    def get(self) -> bool:
        return self.result


def fake_franky() -> SimpleNamespace:
    """The part of franky's API the robot uses, recording every call in ``calls``."""

    class FrankyError(Exception):
        pass

    class ControlException(FrankyError):
        pass

    class RealtimeException(FrankyError):
        pass

    class Robot:
        instances: list = []
        refuse_realtime = False

        def __init__(self, ip, realtime_config):
            if Robot.refuse_realtime and realtime_config == "enforce":
                raise RealtimeException("libfranka: Running kernel does not have realtime capabilities.")
            self.ip, self.realtime_config = ip, realtime_config
            self.current_joint_positions = np.asarray(HOME)
            self.relative_dynamics_factor = 1.0
            self.has_errors, self.is_in_control, self.join_succeeds = False, False, True
            self.plan_fails = False
            self.failures_to_surface = 0
            self.calls: list = []
            Robot.instances.append(self)

        def recover_from_errors(self):
            self.calls.append("recover")
            self.has_errors = False
            return True

        def move(self, motion, asynchronous=False):
            self.calls.append(("move", motion, asynchronous))
            if self.failures_to_surface:  # the running motion's planner failed: franky says so on the next move
                self.failures_to_surface -= 1
                raise RuntimeError("Motion planner failed with error code -111")
            self.is_in_control = True

        def join_motion(self, timeout=None):
            self.calls.append("join")
            if self.plan_fails:  # what franky raises when ruckig cannot plan the motion
                self.plan_fails = False
                raise RuntimeError("Motion planner failed with error code -111")
            if self.join_succeeds:
                self.is_in_control = False
            return self.join_succeeds

        def stop(self):
            self.calls.append("stop")
            self.is_in_control = False
            raise ControlException("libfranka: Move command preempted!")

    class Gripper:
        def __init__(self, ip):
            self.width, self.max_width, self.calls = 0.04, 0.08, []

        def move_async(self, width, speed):
            self.calls.append(("move", width, speed))
            return FakeFuture()

        def grasp_async(self, width, speed, force, epsilon_inner, epsilon_outer):
            self.calls.append(("grasp", width, speed, force))
            return FakeFuture()

    return SimpleNamespace(
        Robot=Robot,
        Gripper=Gripper,
        RealtimeConfig=SimpleNamespace(Enforce="enforce", Ignore="ignore"),
        JointMotion=lambda target, return_when_finished=True: SimpleNamespace(
            kind="joint", target=np.asarray(target), return_when_finished=return_when_finished
        ),
        JointStopMotion=lambda: SimpleNamespace(kind="stop"),
        Exception=FrankyError,
        ControlException=ControlException,
        RealtimeException=RealtimeException,
    )


@pytest.fixture
def franky(monkeypatch):
    fake = fake_franky()
    monkeypatch.setitem(sys.modules, "franky", fake)
    return fake


def test_connect_sets_the_dynamics_and_reads_the_state(tmp_path, franky):
    robot = make(tmp_path, ip="127.0.0.9", realtime=False, dynamics_factor=0.2)
    robot.connect()
    arm = franky.Robot.instances[-1]
    assert (arm.ip, arm.realtime_config, arm.relative_dynamics_factor) == ("127.0.0.9", "ignore", 0.2)
    assert robot.is_connected and arm.calls == []  # nothing to recover, nothing moved
    assert robot.get_observation() == {**joint_action(HOME), "gripper.pos": 0.04}
    robot.disconnect()


def test_a_pending_error_is_recovered_at_connect(tmp_path, franky, monkeypatch):
    original = franky.Robot.__init__

    def with_error(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.has_errors = True

    monkeypatch.setattr(franky.Robot, "__init__", with_error)
    robot = make(tmp_path)
    robot.connect()
    assert franky.Robot.instances[-1].calls == ["recover"]
    robot.disconnect()


def test_a_kernel_without_realtime_gets_a_hint(tmp_path, franky):
    franky.Robot.refuse_realtime = True
    with pytest.raises(RuntimeError, match="realtime=False"):
        make(tmp_path).connect()


def test_actions_are_clipped_to_the_step_and_the_joint_limits_and_sent_without_blocking(tmp_path, franky):
    robot = make(tmp_path, max_relative_target=0.1, gripper=False)
    robot.connect()
    arm = franky.Robot.instances[-1]
    far = np.asarray(HOME) + np.array([1.0, -1.0, 0.05, 0, 0, 0, 0])
    sent = robot.send_action(joint_action(far))
    expected = np.asarray(HOME) + np.array([0.1, -0.1, 0.05, 0, 0, 0, 0])
    assert np.allclose([sent[k] for k in ARM_KEYS], expected)
    _, motion, asynchronous = arm.calls[-1]
    assert asynchronous and not motion.return_when_finished and np.allclose(motion.target, expected)

    free = make(tmp_path, gripper=False, arm="fr3")
    free.connect()
    beyond = free.send_action(joint_action([10.0, -10.0, 0, -1.57, 0, 0.0, 0.785]))
    fr3 = JOINT_LIMITS["fr3"]
    assert beyond["joint_1.pos"] == pytest.approx(fr3[0][1] - JOINT_LIMIT_MARGIN)
    assert beyond["joint_2.pos"] == pytest.approx(fr3[1][0] + JOINT_LIMIT_MARGIN)
    assert beyond["joint_6.pos"] == pytest.approx(fr3[5][0] + JOINT_LIMIT_MARGIN)  # FR3's joint 6 starts at 0.54
    robot.disconnect()
    free.disconnect()


def test_a_motion_that_could_not_be_planned_is_replaced_once_and_a_second_failure_raises(tmp_path, franky):
    robot = make(tmp_path, gripper=False)
    robot.connect()
    arm = franky.Robot.instances[-1]
    arm.failures_to_surface = 1
    robot.send_action(joint_action(HOME))  # the failure is logged and the motion started again
    assert [c[1].kind for c in arm.calls] == ["joint", "joint"] and arm.is_in_control
    arm.failures_to_surface = 2
    with pytest.raises(RuntimeError, match="-111"):
        robot.send_action(joint_action(HOME))
    robot.disconnect()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_or_missing_targets_are_refused_before_anything_is_sent(tmp_path, franky, bad):
    robot = make(tmp_path)
    robot.connect()
    arm = franky.Robot.instances[-1]
    with pytest.raises(ValueError, match="non-finite"):
        robot.send_action({**joint_action(HOME), "joint_3.pos": bad, "gripper.pos": 0.04})
    with pytest.raises(ValueError, match="gripper.pos"):
        robot.send_action(joint_action(HOME))
    assert not any(c[0] == "move" for c in arm.calls if isinstance(c, tuple))
    robot.disconnect()


def test_the_gripper_gets_one_command_at_a_time_and_ignores_jitter(tmp_path, franky):
    robot = make(tmp_path, gripper_speed=0.03, gripper_force=15.0)
    robot.connect()
    gripper = robot._gripper
    assert robot.send_action(joint_action(HOME, 0.07))["gripper.pos"] == 0.07  # wider than 0.04: a move
    assert gripper.calls == [("move", 0.07, 0.03)]
    assert robot.send_action(joint_action(HOME, 0.0))["gripper.pos"] == 0.07  # busy: the running target stays
    robot._gripper_future.done = True
    gripper.width = 0.07
    robot.send_action(joint_action(HOME, 0.07 - GRIPPER_DEADBAND / 2))  # jitter: nothing sent
    assert robot.send_action(joint_action(HOME, -0.5))["gripper.pos"] == 0.0  # clipped, closing: a grasp
    assert gripper.calls[1:] == [("grasp", 0.0, 0.03, 15.0)]
    robot._gripper_future.done = True
    assert robot.send_action(joint_action(HOME, 1.0))["gripper.pos"] == 0.08  # clipped to the hand's width
    robot.disconnect()


def test_disconnect_brakes_the_arm_and_forces_a_stop_only_when_braking_hangs_or_fails(tmp_path, franky):
    robot = make(tmp_path, gripper=False)
    robot.connect()
    arm = franky.Robot.instances[-1]
    robot.send_action(joint_action(HOME))
    robot.disconnect()
    assert [c if isinstance(c, str) else c[1].kind for c in arm.calls] == ["joint", "stop", "join"]
    assert not robot.is_connected

    robot.connect()
    arm = franky.Robot.instances[-1]
    robot.send_action(joint_action(HOME))
    arm.join_succeeds = False  # the braking motion never ends
    robot.disconnect()  # preempted: franky's ControlException is the expected end, not an error
    assert [c if isinstance(c, str) else c[1].kind for c in arm.calls] == ["joint", "stop", "join", "stop"]
    assert not robot.is_connected

    robot.connect()
    arm = franky.Robot.instances[-1]
    robot.send_action(joint_action(HOME))
    arm.plan_fails = True  # the braking motion cannot be planned: stopped all the same, not raised
    robot.disconnect()
    assert [c if isinstance(c, str) else c[1].kind for c in arm.calls] == ["joint", "stop", "join", "stop"]
    assert not robot.is_connected

    robot.connect()
    robot.disconnect()  # idle arm: nothing to stop
    assert franky.Robot.instances[-1].calls == []


# --- against franky-sim ----------------------------------------------------------------------


def franky_sim_command() -> list[str] | None:
    """How to start franky-sim: $FRANKY_SIM, the side venv of scripts/franka_sim.sh, PATH, or this Python."""
    if os.environ.get("FRANKY_SIM"):
        return [os.environ["FRANKY_SIM"]]
    side = REPO / ".cache" / "franky-sim" / "bin" / "franky-sim"
    if side.exists():
        return [str(side)]
    if shutil.which("franky-sim"):
        return [shutil.which("franky-sim")]
    if importlib.util.find_spec("franky_sim") is not None:
        return [sys.executable, "-m", "franky_sim.run_server"]
    return None


@pytest.fixture(scope="module")
def franky_sim(tmp_path_factory):
    """A headless franky-sim for this module's tests; yields the loopback address it serves.

    The simulator picks the first free 127.x.y.z for its fixed ports (1337 arm, 1338 gripper), so a
    second run beside this one still starts; it prints the address once both ports are bound, which
    is what this waits for (a test connection to the port would be taken for a libfranka client).
    """
    pytest.importorskip("franky", reason="franky-control not installed: pip install -e '.[franka]'")
    command = franky_sim_command()
    if command is None:
        pytest.skip("franky-sim not found: bash scripts/franka_sim.sh install (or set FRANKY_SIM)")
    log_path = tmp_path_factory.mktemp("franky_sim") / "franky_sim.log"
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [*command, "--simulator", "mujoco"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        host = None
        while host is None:
            found = re.search(r"using '([0-9.]+)'", log_path.read_text())
            host = found and found.group(1)
            if host is None and (proc.poll() is not None or time.perf_counter() - start > 30):
                pytest.fail(f"franky-sim did not start (exit {proc.poll()}):\n{log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        print(f"franky-sim ready on {host} after {time.perf_counter() - start:.2f} s")
        yield host
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def arm_position(robot: Franka) -> np.ndarray:
    return np.asarray([robot.get_observation()[k] for k in ARM_KEYS])


def wait_for(
    robot: Franka, q0: np.ndarray, target: np.ndarray, fraction: float, since: float, timeout_s: float
) -> float:
    """Seconds from ``since`` until every arm joint has covered ``fraction`` of its way from ``q0`` to
    ``target`` (a joint asked not to move may stray 5 mrad); inf if not within ``timeout_s``."""
    while time.perf_counter() - since < timeout_s:
        if np.all(np.abs(target - arm_position(robot)) <= (1 - fraction) * np.abs(target - q0) + 5e-3):
            return time.perf_counter() - since
        time.sleep(0.002)
    return float("inf")


def test_sim_round_trip_observe_move_toward_the_target_and_disconnect(tmp_path, franky_sim):
    robot = make(tmp_path, ip=franky_sim, realtime=False, dynamics_factor=0.3, max_relative_target=0.2)
    robot.connect()
    try:
        obs = robot.get_observation()
        assert set(obs) == set(robot.observation_features)
        q = np.asarray([obs[k] for k in ARM_KEYS])
        assert np.isfinite(q).all() and 0.0 <= obs["gripper.pos"] <= 0.08
        target = q + np.array([0.05, -0.05, 0.05, 0.05, -0.05, 0.05, 0.1])
        start = time.perf_counter()
        sent = robot.send_action(joint_action(target, gripper=obs["gripper.pos"] + 0.02))
        send_ms = (time.perf_counter() - start) * 1e3
        assert np.allclose([sent[k] for k in ARM_KEYS], target)  # within the step: sent as asked
        halfway = wait_for(robot, q, target, fraction=0.5, since=start, timeout_s=1.0)
        assert halfway < 1.0, "the joints did not move halfway to the target within a second"
        reached = wait_for(robot, q, target, fraction=0.9, since=start, timeout_s=3.0)
        assert reached < 3.0
        print(
            f"send_action {send_ms:.1f} ms; the joints halfway after {halfway * 1e3:.0f} ms, "
            f"90% of the way after {reached * 1e3:.0f} ms"
        )
        assert robot.get_observation()["gripper.pos"] > obs["gripper.pos"] + 0.005  # the fingers opened
    finally:
        robot.disconnect()
    assert not robot.is_connected

    robot.connect()  # after the stop the arm holds where it was brought to rest
    try:
        rest = arm_position(robot)
        assert np.abs(rest - target).max() < 0.03
    finally:
        robot.disconnect()


def test_sim_a_new_action_replaces_the_running_motion(tmp_path, franky_sim):
    robot = make(tmp_path, ip=franky_sim, realtime=False, dynamics_factor=0.3, gripper=False)
    robot.connect()
    try:
        q = arm_position(robot)
        robot.send_action(joint_action(q + np.array([0.4, 0, 0, 0, 0, 0, 0])))  # far; abandoned at once
        time.sleep(0.05)
        final = q + np.array([-0.05, 0, 0, 0, 0, 0, 0])
        robot.send_action(joint_action(final))
        assert wait_for(robot, q, final, fraction=0.9, since=time.perf_counter(), timeout_s=3.0) < 3.0
        time.sleep(0.2)
        settled = arm_position(robot)
        assert np.abs(settled - final).max() < 0.02, "the arm went on toward the replaced target"
    finally:
        robot.disconnect()
