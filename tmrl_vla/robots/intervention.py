"""A person taking the arm over from the policy, tick by tick, through any LeRobot teleoperator.

:class:`Intervention` is what :class:`~tmrl_vla.robots.env.RobotEnv` asks every control tick:
``active()`` (is a person in control now?) and, if so, ``action(observation)``, the command that
replaces the policy's (robot units, still through the safety layer; the tick is recorded as an
intervention). :class:`TeleopIntervention` is one over a LeRobot ``Teleoperator`` made by LeRobot's
own factory (``make_teleoperator_from_config``): a leader arm (``so101_leader``), a gamepad, the
keyboard, or, on the simulated SO-101, :class:`~tmrl_vla.robots.scripted_expert.ScriptedExpertTeleop`
(``scripted_expert_sim``), the pick scene's scripted expert standing in for a person with a leader
arm. The person takes over and hands back with a key (``toggle_requested``), or the teleoperator
says so itself through LeRobot's ``TeleopEvents.IS_INTERVENTION`` (a gamepad's intervention button,
``keyboard_ee``'s movement keys), as in HIL-SERL.

Reused from LeRobot: the ``Teleoperator`` interface, its config registry and factory (a device
class found from its config's name: :mod:`tmrl_vla.robots.config_scripted_expert`); the
intervention event (``TeleopEvents.IS_INTERVENTION`` from ``get_teleop_events()``, the
``HasTeleopEvents`` protocol of ``lerobot.processor.hil_processor``) read in the order HIL-SERL's
action pipeline reads it (``get_action`` first, then ``get_teleop_events``, which for
``keyboard_ee`` clears the pressed keys); the ``(action, observation) -> action`` processor
pipelines of ``lerobot-record`` / ``lerobot-rollout`` as the hook for teleoperators whose actions
are not the robot's joints (``keyboard_ee``'s end-effector deltas through LeRobot's IK steps); and
the DAgger rollout's leader handover (``teleop_supports_feedback``, ``teleop_smooth_move_to`` from
``lerobot.common.control_utils``).

What LeRobot lacks for this: HIL-SERL's intervention (``lerobot.rl.gym_manipulator``:
``AddTeleopActionAsComplimentaryDataStep``, ``AddTeleopEventsAsInfoStep``,
``InterventionActionProcessorStep``) is a processor pipeline around its own env that accepts only
teleoperators with ``get_teleop_events`` (a leader arm has none: it raises ``TypeError``) and
rebuilds the human action as an end-effector delta tensor (``delta_x/y/z`` [+ gripper]), so a
leader arm's joint positions cannot go through it; there is no key toggle. The DAgger rollout
strategy (``lerobot.rollout.strategies.dagger``) toggles a leader arm in and out with keys and
tags ``intervention`` frames, but inside its own loop (inference engine, dataset writer), not as
a per-tick object a gym env can ask. Neither has a simulated person.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, runtime_checkable

from lerobot.common.control_utils import teleop_smooth_move_to, teleop_supports_feedback
from lerobot.teleoperators.utils import TeleopEvents, make_teleoperator_from_config

from tmrl_vla.robots.config_scripted_expert import ScriptedExpertTeleopConfig

__all__ = [
    "Intervention",
    "InterventionKeyMismatch",
    "ScriptedExpertTeleopConfig",
    "TeleopIntervention",
    "TeleopNotCalibratedError",
]


@runtime_checkable
class Intervention(Protocol):
    def active(self) -> bool:
        """Whether a person is in control this tick (asked once per tick, before :meth:`action`)."""

    def action(self, observation: dict) -> dict[str, float]:
        """The person's command for this tick in robot units, keyed as the robot's action
        (``{"shoulder_pan.pos": ..., ...}``); ``observation`` is the robot's latest raw reading."""

    def close(self) -> None:
        """Release the device."""


class InterventionKeyMismatch(ValueError):
    """The teleoperator's actions do not name every joint the robot takes."""


class TeleopNotCalibratedError(RuntimeError):
    """The teleoperator has no calibration matching its motors; LeRobot would prompt for one."""


class TeleopIntervention:
    """A LeRobot teleoperator as an :class:`Intervention`.

    ``teleop``: a LeRobot ``Teleoperator``, connected or not (connected at the first :meth:`active`,
    never calibrated here: a calibration prompt mid-run would fight the person's keys).
    ``robot_action_keys``: the robot's action names, e.g. ``list(robot.action_features)``.
    ``toggle_requested``: ``True`` when the person asked to take over or hand back since the last
    call (e.g. a key); each ``True`` flips who is in control. The teleoperator's own
    ``TeleopEvents.IS_INTERVENTION`` puts the person in control for as long as it reports it.
    ``rename_map``: teleoperator action keys -> the robot's, when they differ.
    ``processor``: for teleoperators whose actions are not the robot's joints, a LeRobot
    ``(action, observation) -> action`` pipeline (as ``lerobot-record``'s
    ``teleop_action_processor``) that gives robot actions, e.g. end-effector deltas through IK.
    ``handover_s``: with a leader arm that can be driven (LeRobot's ``teleop_supports_feedback``,
    e.g. ``so101_leader``), at each take-over first move the leader to the follower's position over
    this many seconds (LeRobot's DAgger handover; the tick waits), then release its torque.

    Taking over from a policy with a leader arm means the follower goes to where the leader is,
    wherever that is: without a handover (the default) the env's safety layer paces that jump with
    its speed limit, so the arm travels there at the limit's speed, not in one tick; the person
    should bring the leader close to the follower's pose before taking over.
    """

    def __init__(
        self,
        teleop,
        robot_action_keys: Iterable[str],
        *,
        toggle_requested: Callable[[], bool] | None = None,
        rename_map: Mapping[str, str] | None = None,
        processor: Callable[[tuple[dict, dict]], dict] | None = None,
        handover_s: float = 0.0,
    ) -> None:
        if handover_s < 0:
            raise ValueError(f"handover_s must be >= 0, got {handover_s}")
        self.teleop = teleop
        self.robot_action_keys = list(robot_action_keys)
        if not self.robot_action_keys:
            raise ValueError("robot_action_keys is empty: give the robot's action names (robot.action_features)")
        self.toggle_requested = toggle_requested
        self.rename_map = dict(rename_map or {})
        self.processor = processor
        self.handover_s = handover_s
        self.ticks = 0  # ticks the person was in control (actions given)
        self.takeovers = 0  # times control passed from the policy to the person
        self.events: dict = {}  # the teleoperator's latest get_teleop_events() (success, terminate, ...)
        self._toggled = False
        self._active = False
        self._pending: dict | None = None  # this tick's action, read before the events (HIL-SERL's order)
        self._handover_due = False
        features = getattr(teleop, "action_features", None)
        flat = isinstance(features, Mapping) and all(isinstance(v, type) for v in features.values())
        if processor is None and flat and features:  # fail before the arm moves, not at the first take-over
            self._check_keys({self.rename_map.get(k, k): v for k, v in features.items()})

    @classmethod
    def from_config(cls, config, robot_action_keys: Iterable[str], **kwargs) -> TeleopIntervention:
        """A teleoperator made by LeRobot's ``make_teleoperator_from_config`` from its config."""
        return cls(make_teleoperator_from_config(config), robot_action_keys, **kwargs)

    def __repr__(self) -> str:
        return f"TeleopIntervention({self.teleop}, active={self._active}, ticks={self.ticks})"

    def connect(self) -> None:
        """Connect the teleoperator if it is not (without calibrating it)."""
        if self.teleop.is_connected:
            return
        if "calibrate" in inspect.signature(self.teleop.connect).parameters:
            self.teleop.connect(calibrate=False)
        else:  # the gamepad and keyboard teleoperators take no calibrate argument
            self.teleop.connect()
        if not self.teleop.is_calibrated:
            self.teleop.disconnect()
            raise TeleopNotCalibratedError(
                f"{self.teleop} has no calibration matching its motors: run `lerobot-calibrate "
                f"--teleop.type=... --teleop.id={getattr(self.teleop, 'id', None)}` first"
            )

    def active(self) -> bool:
        self.connect()
        self._pending = None
        if self.toggle_requested is not None and self.toggle_requested():
            self._toggled = not self._toggled
        reported = False
        get_events = getattr(self.teleop, "get_teleop_events", None)
        if get_events is not None:
            self._pending = self.teleop.get_action()  # before the events, as LeRobot's action pipeline
            self.events = dict(get_events() or {})
            reported = bool(self.events.get(TeleopEvents.IS_INTERVENTION, self.events.get("is_intervention", False)))
        now = self._toggled or reported
        if now and not self._active:
            self.takeovers += 1
            self._handover_due = True
        self._active = now
        return now

    def action(self, observation: dict) -> dict[str, float]:
        self.connect()
        if self._handover_due:
            self._handover_due = False
            if self.handover_s > 0 and teleop_supports_feedback(self.teleop):
                self._handover(observation)
                self._pending = None  # the leader has moved: read it again
        raw = self._pending if self._pending is not None else self.teleop.get_action()
        self._pending = None
        if self.processor is not None:
            raw = self.processor((dict(raw), observation))
        action = {self.rename_map.get(k, k): v for k, v in raw.items()}
        self._check_keys(action)
        self.ticks += 1
        return {k: float(action[k]) for k in self.robot_action_keys}

    def _handover(self, observation: dict) -> None:
        """LeRobot's DAgger handover: drive the leader to the follower, then let the person move it."""
        to_teleop = {robot: teleop for teleop, robot in self.rename_map.items()}
        follower = {to_teleop.get(k, k): float(observation[k]) for k in self.robot_action_keys if k in observation}
        teleop_smooth_move_to(self.teleop, follower, duration_s=self.handover_s)
        self.teleop.disable_torque()

    def _check_keys(self, action: Mapping) -> None:
        missing = [k for k in self.robot_action_keys if k not in action]
        if missing:
            renamed = f" (after rename_map {self.rename_map})" if self.rename_map else ""
            raise InterventionKeyMismatch(
                f"the teleoperator {self.teleop} gives actions {sorted(action)}{renamed}, the robot takes "
                f"{self.robot_action_keys}: missing {missing}. Give a rename_map (teleoperator key -> robot key), "
                "or a processor that turns the teleoperator's actions into the robot's"
            )

    def close(self) -> None:
        """Disconnect the teleoperator (LeRobot's leader arms release their torque)."""
        self._active = self._toggled = False
        if self.teleop.is_connected:
            self.teleop.disconnect()
