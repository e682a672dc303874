"""The safety layer between a policy and a robot: every command passes through it, always.

A fine-tuning policy explores: its commands are by design the ones the demonstrations never held,
and an RL agent that steers a VLA's noise can ask for anything the VLA can output. On a real arm
a wrong command costs hardware, so each command goes through :meth:`SafetyLayer.filter`, which
returns what may be sent:

* **not finite** (NaN, inf) -> hold: the last safe command is sent again (within one step of
  where the arm is);
* **e-stop** (latched by :meth:`SafetyLayer.estop`, e.g. from a key) -> hold until :meth:`release`;
* **watchdog**: the robot's reading older than ``stale_after_s``, or no new command within
  ``stale_after_s`` of the last one -> hold;
* **joint limits**: clamped into ``[lower, upper]`` (inside the calibrated range, with a margin);
* **speed**: each joint moves at most ``max_step`` from the *measured* position per tick, as
  LeRobot's ``max_relative_target`` does; a lagging arm is not handed a growing jump;
* **workspace** (when a forward-kinematics function is given): a command whose end effector
  leaves the box is held;
* **rate**: a command sooner than ``min_period_s`` after the last one sent is not sent (None).

Why not LeRobot's ``ensure_safe_goal_position`` alone: it is the speed clamp only, lets NaN through
(``min(nan, cap)`` is nan) and logs a warning per clamped call, which at 30 Hz floods the log; here
every intervention is counted in :attr:`SafetyLayer.counts` instead. Hold means "send the last safe
command again": a position-controlled arm then stays where it is.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SafetyConfig:
    joint_names: tuple[str, ...]  # the command's joints, in order
    lower: tuple[float, ...]  # lowest command per joint (the robot's units)
    upper: tuple[float, ...]  # highest command per joint
    max_step: tuple[float, ...]  # most a command may differ from the measured position, per joint
    min_period_s: float = 1 / 60  # commands closer together than this are not sent
    stale_after_s: float = 0.2  # a reading, or the gap between commands, older than this holds the arm
    # An end-effector box ((x, y, z) low, (x, y, z) high), metres, checked with forward kinematics.
    workspace: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None

    def __post_init__(self) -> None:
        n = len(self.joint_names)
        if not n or any(len(v) != n for v in (self.lower, self.upper, self.max_step)):
            raise ValueError(f"lower, upper and max_step need one value per joint ({n}: {self.joint_names})")
        if any(lo >= hi for lo, hi in zip(self.lower, self.upper, strict=True)):
            raise ValueError(f"every lower limit must be below its upper limit: {self.lower} vs {self.upper}")
        if any(s <= 0 for s in self.max_step) or self.min_period_s < 0 or self.stale_after_s <= 0:
            raise ValueError("max_step and stale_after_s must be > 0, min_period_s >= 0")
        if self.workspace is not None and any(lo >= hi for lo, hi in zip(*self.workspace, strict=True)):
            raise ValueError(f"workspace must be (low xyz, high xyz) with low < high, got {self.workspace}")


def _so10x(margin: float = 5.0, step: float = 15.0) -> SafetyConfig:
    """SO-100/SO-101 followers as LeRobot drives them by default (``use_degrees=True``): body joints
    in degrees within their calibrated range, the gripper 0..100, limits kept ``margin`` inside
    +-180 and 0..100.

    The speed limit is measured, not guessed: a pick policy at 25 Hz commands body joints up to 15
    degrees ahead of where they are (95th percentile 4-11 degrees per joint; the embedded BC policy
    on its own scene), and closes the gripper in one command, so 15 degrees per tick keeps its
    motion whole while refusing the 90-degree jumps of a policy gone wrong. A 5-degree limit cut
    that policy's success from 6/6 to 1/6 (``eval/so101_sim_check.py``). The gripper is not speed
    limited: LeRobot caps its torque (``Max_Torque_Limit``) at connect."""
    body = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")
    return SafetyConfig(
        joint_names=tuple(f"{j}.pos" for j in (*body, "gripper")),
        lower=(-180 + margin,) * 5 + (0.0,),
        upper=(180 - margin,) * 5 + (100.0 - margin,),
        max_step=(step,) * 5 + (100.0,),
    )


def _franka(arm: str = "fr3", margin: float = 0.05, step: float = 0.01) -> SafetyConfig:
    """Franka FR3 (or Panda) joint positions (rad), the datasheet's limits
    (:data:`tmrl_vla.robots.franka.JOINT_LIMITS`) less ``margin``; 0.01 rad per tick is 0.3 rad/s at
    30 Hz. The gripper (width in m) is not speed limited: franky runs its own grasp motion."""
    from tmrl_vla.robots.franka import GRIPPER_MAX_WIDTH, JOINT_LIMITS

    limits = JOINT_LIMITS[arm]
    return SafetyConfig(
        joint_names=(*(f"joint_{i + 1}.pos" for i in range(7)), "gripper.pos"),
        lower=(*(lo + margin for lo, _ in limits), 0.0),
        upper=(*(hi - margin for _, hi in limits), GRIPPER_MAX_WIDTH),
        max_step=(step,) * 7 + (GRIPPER_MAX_WIDTH,),
    )


# Conservative defaults per robot type (LeRobot's --robot.type names).
SAFETY_PRESETS: dict[str, Callable[[], SafetyConfig]] = {
    "so100_follower": _so10x,
    "so101_follower": _so10x,
    "franka_franky": _franka,  # FR3 limits; a Panda's: SafetyConfig from franka.JOINT_LIMITS["panda"]
}


def safety_preset(robot_type: str) -> SafetyConfig:
    if robot_type not in SAFETY_PRESETS:
        raise KeyError(
            f"no safety preset for robot type {robot_type!r} (known: {', '.join(sorted(SAFETY_PRESETS))}); "
            "give a SafetyConfig with its joint limits and speed"
        )
    return SAFETY_PRESETS[robot_type]()


@dataclass
class SafetyLayer:
    config: SafetyConfig
    clock: Callable[[], float] = time.monotonic
    forward_kinematics: Callable[[np.ndarray], np.ndarray] | None = None  # joints -> (x, y, z) of the tool
    counts: Counter = field(default_factory=Counter)  # why commands were changed or held, by reason
    _last_sent: np.ndarray | None = None
    _last_sent_at: float | None = None
    _last_command_at: float | None = None
    _stopped: bool = False

    def __post_init__(self) -> None:
        c = self.config
        self._lower, self._upper = np.asarray(c.lower, float), np.asarray(c.upper, float)
        self._step = np.asarray(c.max_step, float)
        if c.workspace is not None and self.forward_kinematics is None:
            raise ValueError("a workspace box needs the robot's forward kinematics (forward_kinematics=)")

    # ------------------------------------------------------------------------- e-stop
    def estop(self) -> None:
        """Latch the emergency stop: from the next call on, every command is a hold."""
        self._stopped = True
        self.counts["estop"] += 1

    def release(self) -> None:
        self._stopped = False

    @property
    def stopped(self) -> bool:
        return self._stopped

    @property
    def last_sent(self) -> np.ndarray | None:
        """The last command this layer let through (what the arm was sent last)."""
        return None if self._last_sent is None else self._last_sent.copy()

    # ------------------------------------------------------------------------- the filter
    def filter(self, command: np.ndarray | None, measured: np.ndarray, *, reading_time: float) -> np.ndarray | None:
        """What to send for ``command`` given the ``measured`` joint positions read at
        ``reading_time`` (the same clock as :attr:`clock`); None: send nothing this tick."""
        now = self.clock()
        measured = np.asarray(measured, float)
        if measured.shape != self._lower.shape or not np.all(np.isfinite(measured)):
            raise ValueError(
                f"the measured position must be {self._lower.shape[0]} finite values "
                f"({', '.join(self.config.joint_names)}), got {measured}"
            )
        if self._last_sent_at is not None and now - self._last_sent_at < self.config.min_period_s:
            self.counts["rate"] += 1
            return None
        hold = self._hold_reason(command, now, reading_time)
        if command is not None:
            self._last_command_at = now
        if hold is not None:
            self.counts[hold] += 1
            return self._send(self._hold_target(measured), now)
        target = np.clip(np.asarray(command, float), self._lower, self._upper)
        if not np.array_equal(target, command):
            self.counts["limit"] += 1
        stepped = np.clip(target, measured - self._step, measured + self._step)
        if not np.array_equal(stepped, target):
            self.counts["speed"] += 1
        stepped = np.clip(stepped, self._lower, self._upper)  # a measured position beyond a limit
        if self.config.workspace is not None and not self._in_workspace(stepped):
            self.counts["workspace"] += 1
            return self._send(self._hold_target(measured), now)
        return self._send(stepped, now)

    def _hold_reason(self, command, now: float, reading_time: float) -> str | None:
        if self._stopped:
            return "estop"
        if now - reading_time > self.config.stale_after_s:
            return "stale_reading"
        if command is None:
            late = self._last_command_at is None or now - self._last_command_at > self.config.stale_after_s
            return "late_command" if late else "no_command"
        command = np.asarray(command, float)
        if command.shape != self._lower.shape:
            raise ValueError(
                f"a command must have {self._lower.shape[0]} values ({', '.join(self.config.joint_names)}), "
                f"got shape {command.shape}"
            )
        if not np.all(np.isfinite(command)):
            return "not_finite"
        return None

    def _hold_target(self, measured: np.ndarray) -> np.ndarray:
        """The last safe command (the arm stays where it was sent), or at the start where it is; in
        both cases within one step of where it is now, so an arm pushed away (a person's hand, a
        collision) is not pulled back faster than any command could move it."""
        held = self._last_sent if self._last_sent is not None else measured
        return np.clip(np.clip(held, measured - self._step, measured + self._step), self._lower, self._upper)

    def _in_workspace(self, joints: np.ndarray) -> bool:
        low, high = (np.asarray(b, float) for b in self.config.workspace)
        tool = np.asarray(self.forward_kinematics(joints), float)
        return bool(np.all(tool >= low) and np.all(tool <= high))

    def _send(self, target: np.ndarray, now: float) -> np.ndarray:
        self._last_sent, self._last_sent_at = target.copy(), now
        return target.copy()
