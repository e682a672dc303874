"""A Franka arm (FR3 or Panda) as a LeRobot ``Robot``, driven through franky (``pip install 'tmrl_vla[franka]'``).

Why franky: it wraps libfranka's 1 kHz real-time loop in its own thread and lets Python hand it a
new joint target at any time (``robot.move(motion, asynchronous=True)`` replaces the running
motion, and a trajectory generator keeps the result within the dynamics limits). A LeRobot control
loop at 30 Hz therefore only ever sends targets, never runs the 1 kHz loop itself.

``--robot.type=franka_franky`` (registered here; the plugin ``lerobot_robot_franka_franky`` makes
every LeRobot command line import this module). The class names follow what LeRobot's
``make_robot_from_config`` looks for: for the config class ``FrankaConfig`` in module
``tmrl_vla.robots.franka`` it tries ``tmrl_vla.robots`` and then ``tmrl_vla.robots.franka`` for a
class ``Franka``, so both live in this module.

Features: ``joint_1.pos`` ... ``joint_7.pos`` (rad), ``gripper.pos`` (finger opening in metres, when
``gripper`` is on), and one image per camera. Actions are the same joint (and gripper) targets.
Every action is made safe before it is sent: non-finite values are refused, each joint is clipped
into the arm's documented limits (less :data:`JOINT_LIMIT_MARGIN`) and, with
``max_relative_target``, to within that distance of the measured position. A fine-tuning policy
should still go through :class:`tmrl_vla.robots.safety.SafetyLayer` (watchdog, e-stop, rate).

The simulator ``franky-sim`` speaks the same protocol: ``bash scripts/franka_sim.sh install`` and
``bash scripts/franka_sim.sh start`` give a simulated FR3 on ``127.0.0.1`` (use ``realtime=False``).
"""

from __future__ import annotations

import importlib
import logging
import math
from dataclasses import dataclass, field
from functools import cached_property
from types import ModuleType
from typing import Any

import numpy as np
from lerobot.cameras import CameraConfig, make_cameras_from_configs
from lerobot.robots.config import RobotConfig
from lerobot.robots.robot import Robot
from lerobot.utils.decorators import check_if_already_connected, check_if_not_connected

logger = logging.getLogger(__name__)

JOINTS: tuple[str, ...] = tuple(f"joint_{i}" for i in range(1, 8))
GRIPPER = "gripper"

# Joint position limits (rad), lower and upper per joint, from Franka's "Robot and interface
# specifications" (FCI documentation, frankaemika.github.io/docs/control_parameters.html). The FR3
# values are also the joint ranges of franky-sim's FR3 model (MuJoCo Menagerie's fr3.xml).
JOINT_LIMITS: dict[str, tuple[tuple[float, float], ...]] = {
    "fr3": (
        (-2.7437, 2.7437),
        (-1.7837, 1.7837),
        (-2.9007, 2.9007),
        (-3.0421, -0.1518),
        (-2.8065, 2.8065),
        (0.5445, 4.5169),
        (-3.0159, 3.0159),
    ),
    "panda": (
        (-2.8973, 2.8973),
        (-1.7628, 1.7628),
        (-2.8973, 2.8973),
        (-3.0718, -0.0698),
        (-2.8973, 2.8973),
        (-0.0175, 3.7525),
        (-2.8973, 2.8973),
    ),
}
# Targets stay this far (rad) inside the limits: on the real arm, reaching a limit triggers a reflex
# that stops the motion and needs an error recovery.
JOINT_LIMIT_MARGIN = 0.01
# A new gripper target is only sent when it differs this much (m) from the last one sent: a policy's
# width jitters from tick to tick, and every gripper command is a whole move of its own.
GRIPPER_DEADBAND = 0.005
# Widest opening of the Franka Hand (m), used until the gripper reports its own.
GRIPPER_MAX_WIDTH = 0.08
# How long disconnect() lets the arm brake (franky's JointStopMotion) before it forces a stop.
STOP_TIMEOUT_S = 5.0

INSTALL_HINT = "pip install 'tmrl_vla[franka]' (the franky-control package)"


def import_franky() -> ModuleType:
    """franky, imported on first use so that this module (and its config) loads without the extra."""
    try:
        return importlib.import_module("franky")
    except ImportError as e:
        raise ImportError(f"The franka_franky robot needs franky: {INSTALL_HINT}. ({e})") from e


@RobotConfig.register_subclass("franka_franky")
@dataclass(kw_only=True)
class FrankaConfig(RobotConfig):
    # The robot's FCI address (the control box's IP; Franka's default is 172.16.0.2). For franky-sim,
    # the loopback address it prints, usually 127.0.0.1.
    ip: str = "172.16.0.2"
    # Which arm: "fr3" or "panda". It only selects the joint limits the actions are clipped into.
    arm: str = "fr3"
    # Cameras by name, as for every LeRobot robot (each needs width, height and fps).
    cameras: dict[str, CameraConfig] = field(default_factory=dict)
    # franky's relative dynamics factor (0, 1]: the fraction of the arm's maximum velocity,
    # acceleration and jerk that every motion may use. Conservative by default.
    dynamics_factor: float = 0.1
    # Whether a Franka Hand is attached: adds gripper.pos (finger opening, m) to observations and actions.
    gripper: bool = True
    # Speed (m/s) of the gripper's moves and grasps (franky-sim caps it at 0.05).
    gripper_speed: float = 0.05
    # Force (N) with which a closing gripper command holds what it grasps.
    gripper_force: float = 20.0
    # Require a real-time kernel, as libfranka does by default. False (RealtimeConfig.Ignore) is
    # needed on a kernel without PREEMPT_RT and for franky-sim; expect worse tracking on real hardware.
    realtime: bool = True
    # Limits how far (rad) a joint target may be from the measured joint position, for safety: one
    # value for all joints, or one per joint name (joint_1 ... joint_7, all of them). None: no limit
    # beyond the joint limits (dynamics_factor still bounds the speed). Does not apply to the gripper.
    max_relative_target: float | dict[str, float] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.arm not in JOINT_LIMITS:
            raise ValueError(f"arm must be one of {sorted(JOINT_LIMITS)}, got {self.arm!r}")
        if not 0 < self.dynamics_factor <= 1:
            raise ValueError(f"dynamics_factor must be in (0, 1], got {self.dynamics_factor}")
        if self.gripper_speed <= 0 or self.gripper_force <= 0:
            raise ValueError("gripper_speed and gripper_force must be > 0")
        cap = self.max_relative_target
        if isinstance(cap, dict):
            if set(cap) != set(JOINTS):
                raise ValueError(f"max_relative_target must name every joint {list(JOINTS)}, got {sorted(cap)}")
            if any(v <= 0 for v in cap.values()):
                raise ValueError("max_relative_target values must be > 0")
        elif cap is not None and cap <= 0:
            raise ValueError(f"max_relative_target must be > 0, got {cap}")


class Franka(Robot):
    """A Franka arm through franky: joint position targets in, joint positions (and images) out.

    ``send_action`` never blocks on the arm: it replaces franky's running joint motion with one to
    the new target (``return_when_finished=False``, so the arm holds the last target between
    actions instead of ending its control loop), which franky's trajectory generator reaches within
    ``dynamics_factor`` of the arm's limits.
    """

    config_class = FrankaConfig
    name = "franka_franky"

    def __init__(self, config: FrankaConfig):
        super().__init__(config)
        self.config = config
        self.cameras = make_cameras_from_configs(config.cameras)
        limits = np.asarray(JOINT_LIMITS[config.arm], dtype=float)
        self.lower = limits[:, 0] + JOINT_LIMIT_MARGIN  # lowest joint target sent (rad)
        self.upper = limits[:, 1] - JOINT_LIMIT_MARGIN  # highest joint target sent (rad)
        cap = config.max_relative_target
        self._cap = (
            None if cap is None else np.asarray([cap[j] for j in JOINTS] if isinstance(cap, dict) else [cap] * 7)
        )
        self._franky: ModuleType | None = None
        self._robot: Any = None  # franky.Robot once connected
        self._gripper: Any = None  # franky.Gripper once connected (with config.gripper)
        self._gripper_max_width = GRIPPER_MAX_WIDTH
        self._gripper_future: Any = None  # the running gripper command (a franky.BoolFuture)
        self._gripper_target: float | None = None  # the last gripper width sent

    @property
    def _state_ft(self) -> dict[str, type]:
        names = [*JOINTS, GRIPPER] if self.config.gripper else list(JOINTS)
        return {f"{n}.pos": float for n in names}

    @property
    def _cameras_ft(self) -> dict[str, tuple]:
        return {name: (cfg.height, cfg.width, 3) for name, cfg in self.config.cameras.items()}

    @cached_property
    def observation_features(self) -> dict[str, type | tuple]:
        return {**self._state_ft, **self._cameras_ft}

    @cached_property
    def action_features(self) -> dict[str, type]:
        return self._state_ft

    @property
    def is_connected(self) -> bool:
        return self._robot is not None and all(cam.is_connected for cam in self.cameras.values())

    @property
    def is_calibrated(self) -> bool:
        """Always: a Franka's joint encoders are absolute and factory-calibrated."""
        return True

    def calibrate(self) -> None:
        """Nothing to do (see :attr:`is_calibrated`)."""

    @check_if_already_connected
    def connect(self, calibrate: bool = True) -> None:
        franky = self._franky = import_franky()
        realtime = franky.RealtimeConfig.Enforce if self.config.realtime else franky.RealtimeConfig.Ignore
        try:
            self._robot = franky.Robot(self.config.ip, realtime_config=realtime)
        except franky.RealtimeException as e:
            raise RuntimeError(
                f"{e}: this kernel is not real-time. Use one (PREEMPT_RT, as Franka requires for the real "
                "arm) or set realtime=False (--robot.realtime=false; always for franky-sim)."
            ) from e
        if self.config.gripper:
            self._gripper = franky.Gripper(self.config.ip)
            self._gripper_max_width = float(self._gripper.max_width) or GRIPPER_MAX_WIDTH
        for cam in self.cameras.values():
            cam.connect()
        self.configure()
        logger.info("%s connected to %s.", self, self.config.ip)

    def configure(self) -> None:
        """Recover from a pending error (a reflex from an earlier session) and set the dynamics factor."""
        if self._robot.has_errors:
            logger.warning("%s: the arm reports errors; running franky's automatic error recovery.", self)
            if not self._robot.recover_from_errors():
                raise RuntimeError(f"{self}: automatic error recovery failed; check the arm (Desk) before retrying.")
        self._robot.relative_dynamics_factor = self.config.dynamics_factor

    @check_if_not_connected
    def get_observation(self) -> dict[str, Any]:
        obs: dict[str, Any] = {
            f"{j}.pos": float(q) for j, q in zip(JOINTS, self._robot.current_joint_positions, strict=True)
        }
        if self._gripper is not None:
            obs[f"{GRIPPER}.pos"] = float(self._gripper.width)
        for name, cam in self.cameras.items():
            obs[name] = cam.read_latest()
        return obs

    @check_if_not_connected
    def send_action(self, action: dict[str, Any]) -> dict[str, Any]:
        """Start moving toward the action's joint targets and return the targets actually sent.

        Raises ``ValueError`` for a missing or non-finite joint target: a policy's NaN must never
        reach the arm, and there is no sensible value to substitute here (the safety layer's hold is
        the place for that). Targets are clipped into the joint limits and to ``max_relative_target``
        of the measured position. Errors of the arm (a reflex, a lost connection) surface as franky's
        exceptions, from this call or the next; a motion that ended because it could not be planned
        is replaced by a new one, once, with a warning.
        """
        missing = [k for k in self.action_features if k not in action]
        if missing:
            raise ValueError(f"{self}: action lacks {missing}")
        goal = np.asarray([float(action[f"{j}.pos"]) for j in JOINTS])
        if not np.isfinite(goal).all():
            raise ValueError(f"{self}: non-finite joint target {goal.tolist()}")
        if self._cap is not None:
            present = np.asarray(self._robot.current_joint_positions, dtype=float)
            goal = np.clip(goal, present - self._cap, present + self._cap)
        goal = np.clip(goal, self.lower, self.upper)
        franky = self._franky
        try:
            self._robot.move(franky.JointMotion(goal, return_when_finished=False), asynchronous=True)
        except RuntimeError as e:
            # The running motion ended because franky's planner (ruckig) could not plan a step (its
            # rare synchronisation error, seen on franky-sim after the controller had stalled); the
            # arm stopped with it. A new motion plans afresh from where the arm is: try once more.
            # franky's own errors (reflexes, a lost connection) are franky.Exception, not caught here.
            logger.warning("%s: the last motion failed (%s); starting a new one.", self, e)
            self._robot.move(franky.JointMotion(goal, return_when_finished=False), asynchronous=True)
        sent: dict[str, Any] = {f"{j}.pos": float(q) for j, q in zip(JOINTS, goal, strict=True)}
        if self._gripper is not None:
            sent[f"{GRIPPER}.pos"] = self._send_gripper(float(action[f"{GRIPPER}.pos"]))
        return sent

    def _send_gripper(self, width: float) -> float:
        """Command the gripper toward ``width`` if it is free and the target moved; return the target in force.

        One gripper command runs at a time (each is a whole move), so a new one starts only when the
        last has finished and the target moved by more than :data:`GRIPPER_DEADBAND`. Closing uses a
        grasp (it holds what it meets with ``gripper_force``; its wide tolerances make an empty grasp
        succeed too), opening a plain move.
        """
        if not math.isfinite(width):
            raise ValueError(f"{self}: non-finite gripper target {width}")
        width = min(max(width, 0.0), self._gripper_max_width)
        last = self._gripper_target
        if self._gripper_future is not None:
            if not self._gripper_future.wait(0):
                return last if last is not None else width  # still busy with the last command
            self._log_gripper_result()
        if last is not None and abs(width - last) <= GRIPPER_DEADBAND:
            return last
        speed = self.config.gripper_speed
        if width < self._gripper.width:
            tolerance = self._gripper_max_width
            self._gripper_future = self._gripper.grasp_async(
                width, speed, self.config.gripper_force, tolerance, tolerance
            )
        else:
            self._gripper_future = self._gripper.move_async(width, speed)
        self._gripper_target = width
        return width

    def _log_gripper_result(self) -> None:
        """Log how the finished gripper command ended (a failed move is not fatal to the episode)."""
        future, self._gripper_future = self._gripper_future, None
        try:
            if not future.get():
                logger.info("%s: gripper command to %.4f m did not succeed", self, self._gripper_target)
        except self._franky.Exception as e:
            logger.warning("%s: gripper command to %.4f m failed: %s", self, self._gripper_target, e)

    @check_if_not_connected
    def disconnect(self) -> None:
        """Brake the arm to a stop, let a running gripper command finish, and close the connections.

        The arm is brought to rest by franky's ``JointStopMotion`` (a deceleration within the
        dynamics limits) rather than an abrupt stop; only if that has not ended within
        :data:`STOP_TIMEOUT_S`, or could not be planned (ruckig's rare synchronisation error, seen on
        franky-sim after the controller had stalled), is the motion preempted with ``robot.stop()``.
        Afterwards the arm holds its position under its own controller, as after any finished motion.
        """
        franky, robot = self._franky, self._robot
        try:
            if robot.is_in_control:
                try:
                    robot.move(franky.JointStopMotion(), asynchronous=True)
                    stopped = robot.join_motion(timeout=STOP_TIMEOUT_S)
                    if not stopped:
                        logger.warning("%s: the arm did not stop within %.1f s.", self, STOP_TIMEOUT_S)
                except RuntimeError as e:  # franky's planner (ruckig) failing to plan the stop: still stop
                    logger.warning("%s: the stop motion failed (%s).", self, e)
                    stopped = False
                if not stopped:
                    logger.warning("%s: preempting the motion.", self)
                    robot.stop()
                    robot.join_motion(timeout=STOP_TIMEOUT_S)
        except franky.ControlException as e:  # a preempted motion ends with this; the arm is stopped
            logger.info("%s: motion ended with %s", self, e)
        finally:
            if self._gripper_future is not None and self._gripper_future.wait(STOP_TIMEOUT_S):
                self._log_gripper_result()
            self._robot = self._gripper = self._gripper_future = None
            self._gripper_target = None
            for cam in self.cameras.values():
                if cam.is_connected:
                    cam.disconnect()
        logger.info("%s disconnected.", self)
