"""A person taking over from the policy: toggles, LeRobot's intervention event, keys, and the
scripted expert standing in for a leader arm on the simulated SO-101 under LeRobot's so101_follower."""

import builtins
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from lerobot.teleoperators import Teleoperator, TeleoperatorConfig, TeleopEvents

import tmrl_vla.envs  # noqa: F401  (headless GL before mujoco)
from tmrl_vla.robots.intervention import (
    Intervention,
    InterventionKeyMismatch,
    ScriptedExpertTeleopConfig,
    TeleopIntervention,
    TeleopNotCalibratedError,
)

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
ROBOT_KEYS = [f"{j}.pos" for j in JOINTS]


@dataclass(kw_only=True)
class FakeTeleopConfig(TeleoperatorConfig):
    keys: tuple[str, ...] = tuple(ROBOT_KEYS)


class FakeTeleop(Teleoperator):
    """Shaped like LeRobot's leader arms: flat float actions, connect(calibrate=...)."""

    config_class = FakeTeleopConfig
    name = "fake_teleop"

    def __init__(self, config: FakeTeleopConfig, calibrated: bool = True) -> None:
        super().__init__(config)
        self.keys, self.calibrated = config.keys, calibrated
        self.connected = False
        self.connect_calls: list[bool] = []
        self.values = {k: float(i) for i, k in enumerate(self.keys)}
        self.calls: list[str] = []

    @property
    def action_features(self) -> dict:
        return {k: float for k in self.keys}

    @property
    def feedback_features(self) -> dict:
        return {}

    @property
    def is_connected(self) -> bool:
        return self.connected

    def connect(self, calibrate: bool = True) -> None:
        self.connect_calls.append(calibrate)
        self.connected = True

    @property
    def is_calibrated(self) -> bool:
        return self.calibrated

    def calibrate(self) -> None:
        raise AssertionError("the intervention must never calibrate a teleoperator")

    def configure(self) -> None:
        pass

    def get_action(self) -> dict[str, float]:
        assert self.connected, "get_action on a disconnected teleoperator"
        self.calls.append("get_action")
        return dict(self.values)

    def send_feedback(self, feedback: dict) -> None:
        pass

    def disconnect(self) -> None:
        self.connected = False


class EventTeleop(FakeTeleop):
    """A gamepad-like teleoperator that says itself when the person intervenes (no calibrate argument)."""

    def __init__(self, config: FakeTeleopConfig) -> None:
        super().__init__(config)
        self.intervening = False

    def connect(self) -> None:  # like LeRobot's GamepadTeleop.connect
        self.connected = True

    def get_teleop_events(self) -> dict:
        self.calls.append("events")
        return {TeleopEvents.IS_INTERVENTION: self.intervening, TeleopEvents.SUCCESS: False}


class ActuatedTeleop(FakeTeleop):
    """A leader arm with motors (LeRobot's teleop_supports_feedback): feedback moves it."""

    def __init__(self, config: FakeTeleopConfig) -> None:
        super().__init__(config)
        self.torque = False
        self.feedback: list[dict] = []

    @property
    def feedback_features(self) -> dict:
        return self.action_features

    def send_feedback(self, feedback: dict) -> None:
        self.feedback.append(dict(feedback))
        self.values.update(feedback)

    def enable_torque(self) -> None:
        self.torque = True

    def disable_torque(self) -> None:
        self.torque = False


class Keys:
    """The person's take-over key: ``press()`` makes the next poll report one request."""

    def __init__(self) -> None:
        self.pressed = 0

    def press(self) -> None:
        self.pressed += 1

    def __call__(self) -> bool:
        pressed, self.pressed = self.pressed > 0, 0
        return pressed


def make(tmp_path, cls=FakeTeleop, **kwargs):
    return cls(FakeTeleopConfig(id="t", calibration_dir=Path(tmp_path), **kwargs))


def test_the_person_toggles_control_and_the_teleops_values_drive_the_robots_keys(tmp_path):
    teleop = make(tmp_path, keys=("extra.pos", *reversed(ROBOT_KEYS)))  # more keys, another order
    keys = Keys()
    intervention = TeleopIntervention(teleop, ROBOT_KEYS, toggle_requested=keys)
    assert isinstance(intervention, Intervention)
    assert not teleop.connected  # connected at first use
    assert not intervention.active()
    assert teleop.connected and teleop.connect_calls == [False]  # never asked to calibrate
    assert not intervention.active()
    keys.press()
    assert intervention.active()
    action = intervention.action({"shoulder_pan.pos": 1.0})
    assert list(action) == ROBOT_KEYS
    assert action == {k: teleop.values[k] for k in ROBOT_KEYS}
    assert all(type(v) is float for v in action.values())
    assert intervention.active()  # stays in control until the key again
    intervention.action({})
    keys.press()
    assert not intervention.active()
    assert not intervention.active()
    assert (intervention.ticks, intervention.takeovers) == (2, 1)
    keys.press()
    assert intervention.active() and intervention.takeovers == 2
    intervention.close()
    assert not teleop.connected


def test_the_teleops_own_intervention_event_takes_over_without_the_key(tmp_path):
    teleop = make(tmp_path, cls=EventTeleop)
    intervention = TeleopIntervention(teleop, ROBOT_KEYS, toggle_requested=lambda: False)
    assert not intervention.active()
    teleop.intervening = True
    teleop.calls.clear()
    assert intervention.active()
    assert teleop.calls == ["get_action", "events"]  # HIL-SERL's order: keyboard_ee's events clear its keys
    assert intervention.action({}) == {k: teleop.values[k] for k in ROBOT_KEYS}
    assert teleop.calls == ["get_action", "events"]  # the tick's action is the one read with the events
    assert intervention.events[TeleopEvents.SUCCESS] is False
    teleop.intervening = False
    assert not intervention.active()
    assert (intervention.ticks, intervention.takeovers) == (1, 1)
    intervention.close()
    assert not teleop.connected


def test_key_mismatches_name_both_sides_and_a_rename_map_fixes_them(tmp_path):
    teleop = make(tmp_path, keys=("pan", "lift", "elbow", "wrist", "roll", "grip"))
    with pytest.raises(InterventionKeyMismatch) as err:  # before the arm moves
        TeleopIntervention(teleop, ROBOT_KEYS)
    message = str(err.value)
    assert "'pan'" in message and "'shoulder_pan.pos'" in message and "rename_map" in message

    rename = dict(zip(teleop.keys, ROBOT_KEYS, strict=True))
    intervention = TeleopIntervention(teleop, ROBOT_KEYS, rename_map=rename, toggle_requested=lambda: True)
    assert intervention.active()
    assert intervention.action({}) == {rename[k]: v for k, v in teleop.values.items()}

    # a teleoperator whose actions differ from what its features said: found at the action
    liar = make(tmp_path)
    intervention = TeleopIntervention(liar, ROBOT_KEYS, toggle_requested=lambda: True)
    del liar.values["gripper.pos"]
    assert intervention.active()
    with pytest.raises(InterventionKeyMismatch, match=r"missing \['gripper.pos'\]") as err:
        intervention.action({})
    assert "'shoulder_pan.pos'" in str(err.value)


def test_a_processor_maps_other_actions_onto_the_robots_with_the_observation(tmp_path):
    teleop = make(tmp_path, keys=("delta_x",))

    def processor(pair):  # LeRobot's (action, observation) -> action pipelines have this shape
        action, observation = pair
        return {k: observation[k] + action["delta_x"] for k in ROBOT_KEYS}

    intervention = TeleopIntervention(teleop, ROBOT_KEYS, processor=processor, toggle_requested=lambda: True)
    assert intervention.active()
    observation = {k: 10.0 for k in ROBOT_KEYS}
    assert intervention.action(observation) == {k: 10.0 for k in ROBOT_KEYS}


def test_an_uncalibrated_teleop_is_refused_not_calibrated(tmp_path):
    teleop = FakeTeleop(FakeTeleopConfig(id="t", calibration_dir=Path(tmp_path)), calibrated=False)
    intervention = TeleopIntervention(teleop, ROBOT_KEYS)
    with pytest.raises(TeleopNotCalibratedError, match="lerobot-calibrate"):
        intervention.active()
    assert not teleop.connected


def test_a_handover_drives_an_actuated_leader_to_the_follower_first(tmp_path):
    teleop = make(tmp_path, cls=ActuatedTeleop)
    keys = Keys()
    intervention = TeleopIntervention(teleop, ROBOT_KEYS, toggle_requested=keys, handover_s=0.1)
    keys.press()
    assert intervention.active()
    follower = {k: 50.0 + i for i, k in enumerate(ROBOT_KEYS)}
    assert intervention.action(follower) == follower  # the leader now stands where the follower is
    assert teleop.feedback and not teleop.torque  # driven there, then released to the person
    sent = len(teleop.feedback)
    intervention.action(follower)
    assert len(teleop.feedback) == sent  # once per take-over
    with pytest.raises(ValueError, match="handover_s"):
        TeleopIntervention(teleop, ROBOT_KEYS, handover_s=-1)


# ----------------------------------------------------------------------------- the simulated person
@pytest.fixture
def no_prompts(monkeypatch):
    def refuse(*_):
        raise AssertionError("LeRobot asked a question: the simulated arm must connect without a prompt")

    monkeypatch.setattr(builtins, "input", refuse)


def test_the_scripted_expert_teleop_picks_the_cube_through_lerobots_follower(tmp_path, no_prompts):
    from lerobot.robots import make_robot_from_config
    from lerobot.robots.so_follower import SO101FollowerConfig
    from lerobot.teleoperators.utils import make_teleoperator_from_config

    from tmrl_vla.robots.scripted_expert import ScriptedExpertTeleop
    from tmrl_vla.robots.sim.so101 import GRIPPER_SPAN, SimulatedSO101, SimulatedSO101Config

    config = ScriptedExpertTeleopConfig(simulation="intervention_test", seed=1, calibration_dir=Path(tmp_path))
    assert config.type == "scripted_expert_sim"
    sim = SimulatedSO101(SimulatedSO101Config(name="intervention_test", shift="none"))
    sim.start(seed=4)
    robot = None
    try:
        sim.write_calibration(tmp_path, "arm")
        for attempt in range(3):
            robot = make_robot_from_config(
                SO101FollowerConfig(port=sim.port, id="arm", calibration_dir=Path(tmp_path), cameras={})
            )
            try:
                robot.connect(calibrate=False)
                break
            except (RuntimeError, ConnectionError):
                # LeRobot's connect reads and writes every servo with a few milliseconds' timeout; on a
                # loaded CPU the emulator's thread sometimes misses one (the bus emulator's timing, not
                # the intervention's): try again on a freshly opened port.
                robot.bus.port_handler.closePort()
                if attempt == 2:
                    raise
        teleop = make_teleoperator_from_config(config)  # LeRobot's factory finds the class from the config
        assert isinstance(teleop, ScriptedExpertTeleop)
        intervention = TeleopIntervention(teleop, list(robot.action_features), toggle_requested=lambda: True)
        assert intervention.active() and teleop.is_connected

        first = intervention.action(robot.get_observation())
        joints = sim.joint_positions()
        # LeRobot's SO-101 units: degrees, and the gripper's opening as 0..100
        assert 50 < first["gripper.pos"] <= 100
        assert first["gripper.pos"] == pytest.approx(joints[5] / GRIPPER_SPAN * 100, abs=15)
        arm = np.array([first[f"{j}.pos"] for j in JOINTS[:5]])
        assert np.abs(arm - np.rad2deg(joints[:5])).max() < 10  # one 25 Hz step from where the arm stands
        assert np.abs(arm).max() > 3  # degrees, not radians

        robot.send_action(first)
        start = time.monotonic()
        while not sim.success() and time.monotonic() - start < 6.0:
            time.sleep(0.04)
            intervention.active()
            robot.send_action(intervention.action(robot.get_observation()))
        took = time.monotonic() - start
        assert sim.success(), (
            f"not picked after {took:.1f} s ({intervention.ticks} ticks, {teleop.attempts} attempts, "
            f"{sim.lagging_updates} lagging physics updates): cube at {sim.scene.cube_pos()}"
        )
        assert teleop.attempts == 1
        intervention.close()
        assert not teleop.is_connected
    finally:
        if robot is not None and robot.is_connected:
            robot.disconnect()
        sim.stop()


def test_the_scripted_person_plans_again_after_a_pause_a_reset_or_a_miss(tmp_path):
    from lerobot.utils.errors import DeviceNotConnectedError

    from tmrl_vla.robots.scripted_expert import REPLAN_AFTER_S, ScriptedExpertTeleop
    from tmrl_vla.robots.sim.so101 import SimulatedSO101, SimulatedSO101Config

    with pytest.raises(LookupError, match="no simulation named 'nowhere'"):
        ScriptedExpertTeleop(ScriptedExpertTeleopConfig(simulation="nowhere", calibration_dir=Path(tmp_path))).connect()
    sim = SimulatedSO101(SimulatedSO101Config(name="intervention_replan", shift="none"))
    sim.start(seed=5)
    try:
        teleop = ScriptedExpertTeleop(
            ScriptedExpertTeleopConfig(simulation="intervention_replan", calibration_dir=Path(tmp_path))
        )
        assert teleop.feedback_features == {} and teleop.is_calibrated
        with pytest.raises(DeviceNotConnectedError):
            teleop.get_action()
        teleop.connect()
        for _ in range(teleop.attempt_steps):  # nothing drives the arm: the grasp closes on air
            teleop.get_action()
        assert teleop.attempts == 1
        teleop.get_action()  # the plan has run out and the cube is still down: the person tries again
        assert teleop.attempts == 2
        time.sleep(REPLAN_AFTER_S + 0.1)  # an intervention that starts again plans from the state it finds
        teleop.get_action()
        assert teleop.attempts == 3
        teleop.reset()
        teleop.get_action()
        assert teleop.attempts == 4
        teleop.disconnect()
        assert not teleop.is_connected
    finally:
        sim.stop()
