"""A LeRobot ``Teleoperator`` that stands in for a person with a leader arm on the simulated SO-101.

:class:`ScriptedExpertTeleop` reads the running :class:`~tmrl_vla.robots.sim.so101.SimulatedSO101`'s
privileged state (under its lock) and gives the pick scene's
:class:`~tmrl_vla.envs.expert.ScriptedExpert`'s next joint targets in LeRobot's SO-101 units
(degrees, gripper 0..100; the inverse of :func:`~tmrl_vla.robots.sim.so101.scene_units`), keyed
``"<joint>.pos"`` as an ``so101_leader`` would give them, so an intervention, a recording or
``lerobot-teleoperate`` can use it where a person would hold a leader arm.

The expert was written for a step-by-step env: it plans a motion (above the cube, down, close,
lift) from the state at its ``reset`` and each ``act`` gives the next 25 Hz step of that plan. Here
one :meth:`ScriptedExpertTeleop.get_action` is one step (call it at the control rate, 25 Hz, as
the env does), and the plan is made afresh from the scene's current state

* on the first call, and after :meth:`ScriptedExpertTeleop.reset`;
* when no call came for ``REPLAN_AFTER_S`` (an intervention starts again: the policy has moved
  the arm, or a new episode has put the cube elsewhere);
* when the plan has run out and the cube is not up (a missed grasp: the person tries again).
"""

from __future__ import annotations

import math
import time

import numpy as np
from lerobot.teleoperators.teleoperator import Teleoperator
from lerobot.utils.decorators import check_if_already_connected, check_if_not_connected

from tmrl_vla.envs.expert import ScriptedExpert
from tmrl_vla.envs.pick_cube import JOINT_NAMES
from tmrl_vla.robots.config_scripted_expert import ScriptedExpertTeleopConfig
from tmrl_vla.robots.sim.registry import running_simulation
from tmrl_vla.robots.sim.scene_link import SceneConnection, parse_address
from tmrl_vla.robots.sim.so101 import SimulatedSO101, scene_units

REPLAN_AFTER_S = 0.5  # a pause this long between calls starts a new attempt from the current state
RETRY_GRACE_STEPS = 10  # steps to hold the end of a plan before judging the attempt
UP = 0.5  # the cube counts as up once it has risen this fraction of the simulation's lift height


class ScriptedExpertTeleop(Teleoperator):
    config_class = ScriptedExpertTeleopConfig
    name = "scripted_expert_sim"

    def __init__(self, config: ScriptedExpertTeleopConfig) -> None:
        super().__init__(config)
        self.config = config
        self.expert = ScriptedExpert(seed=config.seed)
        scale, offset = scene_units()
        self._scale, self._offset = np.asarray(scale), np.asarray(offset)
        cfg = self.expert.config
        # steps after which a plan has surely run out (at the slowest speed) and the cube should be up
        self.attempt_steps = math.ceil(sum(cfg.phase_steps) / cfg.speed_range[0]) + RETRY_GRACE_STEPS
        self.simulation: SimulatedSO101 | None = None
        self.remote: SceneConnection | None = None  # a simulation served by another process: its expert acts
        self.attempts = 0  # plans made (interventions started, plus retries)
        self._steps = 0  # steps given since the current plan was made
        self._last_call: float | None = None
        self._cube_z = 0.0  # the cube's height when the current plan was made

    @property
    def action_features(self) -> dict[str, type]:
        return {f"{joint}.pos": float for joint in JOINT_NAMES}

    @property
    def feedback_features(self) -> dict:
        return {}  # nothing to drive: LeRobot's handovers slide the follower instead

    @property
    def is_connected(self) -> bool:
        return self.simulation is not None or self.remote is not None

    @check_if_already_connected
    def connect(self, calibrate: bool = True) -> None:
        address = parse_address(self.config.simulation)
        if address is not None:
            self.remote = SceneConnection(address[1])
            return
        simulation = running_simulation(self.config.simulation)
        if not isinstance(simulation, SimulatedSO101):
            raise TypeError(f"the scripted expert drives the simulated SO-101's scene, not {type(simulation).__name__}")
        self.simulation = simulation
        self.reset()

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def reset(self) -> None:
        """The next :meth:`get_action` plans a new attempt from the scene's state."""
        self._last_call = None

    @check_if_not_connected
    def get_action(self) -> dict[str, float]:
        if self.remote is not None:
            return self.remote.request({"op": "expert"})["action"]
        sim = self.simulation
        now = time.monotonic()
        with sim.lock:
            cube_z = float(sim.scene.cube_pos()[2])
            paused = self._last_call is None or now - self._last_call > REPLAN_AFTER_S
            missed = self._steps >= self.attempt_steps and cube_z - self._cube_z < UP * sim.config.lift_height
            if paused or missed:
                self.expert.reset(sim.scene)
                self._cube_z, self._steps = cube_z, 0
                self.attempts += 1
            target = self.expert.act(sim.scene)  # the scene's units: rad, the gripper's opening in m
        self._last_call = now
        self._steps += 1
        robot = (np.asarray(target, dtype=np.float64) - self._offset) / self._scale
        return {f"{joint}.pos": float(value) for joint, value in zip(JOINT_NAMES, robot, strict=True)}

    def send_feedback(self, feedback: dict) -> None:
        pass

    @check_if_not_connected
    def disconnect(self) -> None:
        if self.remote is not None:
            self.remote.close()
        self.simulation = self.remote = None
