"""A simulated SO-101 that LeRobot's own ``so101_follower`` drives: MuJoCo behind emulated servos.

The pieces, each standing in for one piece of hardware:

* the **arm and the table** are the default pick scene (:mod:`tmrl_vla.envs.pick_cube`), stepped by a
  thread in real time: the servos' goal positions become the position actuators' targets, the joint
  angles become the servos' present positions;
* the **servo bus** is a Feetech STS3215 emulator on a pseudo-terminal
  (:mod:`tmrl_vla.robots.sim.feetech_emulator`): LeRobot's unmodified ``FeetechMotorsBus`` opens its
  path as it would ``/dev/ttyACM0``;
* the **cameras** are MuJoCo renders, read through the ``mujoco_sim`` camera type
  (:mod:`tmrl_vla.robots.sim.mujoco_sim_camera`), which finds this simulation by its ``name``;
* the **person** who resets the scene and says whether the cube was picked is
  :meth:`SimulatedSO101.reset_scene` and :meth:`SimulatedSO101.success` (on a real arm these are a
  person at the keyboard, :mod:`tmrl_vla.robots.people`).

Units. A servo turns once in 4096 ticks. The calibration this class writes puts each joint's
zero at tick 2048 with a range symmetric about it, so LeRobot's degrees (``use_degrees=True``) are
exactly the scene's radians times 180/pi; the gripper's 0..100 spans the scene's 0..4.5 cm
opening. :func:`scene_units` is that map, for a policy trained in the scene's units (the embedded
default); a policy trained on recordings of this robot needs none.

What it does not model: servo dynamics beyond MuJoCo's position actuators, a limp arm (torque off
holds the arm where it is instead of letting it sag), bus errors other than a disconnect.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from tmrl_vla.envs.pick_cube import JOINT_NAMES, PickCubeConfig, PickCubeEnv
from tmrl_vla.robots.sim.bus_process import FeetechBusProcess
from tmrl_vla.robots.sim.feetech_emulator import FeetechBusEmulator
from tmrl_vla.robots.sim.registry import register, unregister

MOTOR_IDS = {name: i + 1 for i, name in enumerate(JOINT_NAMES)}  # LeRobot's SO-101 ids, 1..6
TICKS_PER_TURN = 4096
ZERO_TICK = 2048
# LeRobot's DEGREES normalisation divides by the resolution less one; using the same factor makes
# degrees = radians * 180 / pi exactly, not to 0.02 %.
TICKS_PER_RAD = (TICKS_PER_TURN - 1) / (2 * np.pi)
GRIPPER_TICKS = 1000  # ticks over the gripper's full opening
GRIPPER_SPAN = 0.045  # the scene's gripper slide range (assets/so100_pick_cube.xml), metres


@dataclass(frozen=True)
class SimulatedSO101Config:
    name: str = "so101_sim"  # what the mujoco_sim cameras look it up by; one running simulation per name
    shift: str = "moved_camera"  # the pick scene's context shift (tmrl_vla.envs.pick_cube.SHIFTS)
    image_size: int = 64  # camera renders are image_size x image_size
    cameras: tuple[str, ...] = ("front",)  # scene cameras that can be read ("front", "wrist")
    camera_fps: int | None = None  # frames per second of the mujoco_sim cameras; None: the control rate
    physics_period_s: float = 0.004  # wall-clock seconds between physics updates (the model's timestep)
    lift_height: float = 0.04  # the cube counts as picked when lifted this far ...
    hold_s: float = 0.12  # ... for this long (three 25 Hz control steps, as the scene's task)
    # serve the servo bus from a process of its own (bus_process.py): for LeRobot command lines in other
    # processes, whose connect fails on one late reply; in this process, the bus's registers are readable
    bus_process: bool = False


class SimulatedSO101:
    """``start()`` -> the servo bus's port; then LeRobot connects to it. Also a context manager."""

    def __init__(self, config: SimulatedSO101Config | None = None) -> None:
        self.config = config or SimulatedSO101Config()
        c = self.config
        self.scene = PickCubeEnv(PickCubeConfig.with_shift(c.shift, image_size=c.image_size, cameras=c.cameras))
        self.model, self.data = self.scene.model, self.scene.data
        ids = tuple(MOTOR_IDS.values())
        self.bus = FeetechBusProcess(ids) if c.bus_process else FeetechBusEmulator(ids)
        self.lock = threading.Lock()  # held while the physics thread changes ``data``
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lifted_since: float | None = None
        self._cube_z0 = 0.0
        self.physics_steps = 0
        self.lagging_updates = 0  # updates that had to catch up more than 10 ms of simulated time

    # ------------------------------------------------------------------------- lifecycle
    def start(self, seed: int = 0) -> str:
        register(self.config.name, self)
        self.scene.reset(seed=seed)  # arm at the home pose, cube placed
        self._cube_z0 = float(self.scene.cube_pos()[2])
        for entry in self.calibration().values():  # the servos hold the calibration written to them
            self.bus.write_register(entry["id"], "Min_Position_Limit", entry["range_min"])
            self.bus.write_register(entry["id"], "Max_Position_Limit", entry["range_max"])
            self.bus.write_register(entry["id"], "Homing_Offset", entry["homing_offset"])
        self._publish_positions()  # (the emulated servo takes its goal from here when its torque goes on)
        port = self.bus.start()
        self._thread = threading.Thread(target=self._run, name=f"{self.config.name}-physics", daemon=True)
        self._thread.start()
        return port

    @property
    def port(self) -> str:
        return self.bus.port

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        self.bus.stop()
        unregister(self.config.name, self)
        self.scene.close()

    def __enter__(self) -> SimulatedSO101:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------------- calibration
    def calibration(self) -> dict[str, dict[str, int]]:
        """LeRobot's calibration file content for this arm (``MotorCalibration`` fields per motor)."""
        calibration = {}
        for name, motor_id in MOTOR_IDS.items():
            if name == "gripper":
                low, high = ZERO_TICK, ZERO_TICK + GRIPPER_TICKS
            else:
                joint = self.model.joint(name).id
                half = int(np.ceil(np.abs(self.model.jnt_range[joint]).max() * TICKS_PER_RAD))
                low, high = ZERO_TICK - half, ZERO_TICK + half
            calibration[name] = {
                "id": motor_id,
                "drive_mode": 0,
                "homing_offset": 0,
                "range_min": low,
                "range_max": high,
            }
        return calibration

    def write_calibration(self, calibration_dir: str | Path, robot_id: str) -> Path:
        """Write ``<calibration_dir>/<robot_id>.json`` where LeRobot's ``Robot`` looks for it."""
        path = Path(calibration_dir) / f"{robot_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.calibration(), indent=4))
        return path

    # ------------------------------------------------------------------------- the person's view
    def reset_scene(self, seed: int) -> None:
        """Put the cube back somewhere in the region, as a person would between episodes (the arm
        is not touched: the robot env drives it home first)."""
        rng = np.random.default_rng(seed)
        c = self.scene.config
        with self.lock:
            xy = np.array([rng.uniform(*c.cube_x_range), rng.uniform(*c.cube_y_range)])
            self.scene._place(self.scene._cube_qpos, xy)
            adr = self.model.jnt_dofadr[self.model.joint("cube").id]
            self.data.qvel[adr : adr + 6] = 0.0
            mujoco.mj_forward(self.model, self.data)
            self._cube_z0 = float(self.scene.cube_pos()[2])
            self._lifted_since = None

    def success(self) -> bool:
        """Whether the cube has been held up for ``hold_s`` (what a person would label a success)."""
        held = self.held_for()
        return held is not None and held >= self.config.hold_s

    def held_for(self) -> float | None:
        """How long (simulated seconds) the cube has been up; None when it is not."""
        with self.lock:
            since, now = self._lifted_since, float(self.data.time)
        return None if since is None else now - since

    def state(self) -> dict:
        """The cube's position (m), whether it counts as picked, the simulation's time (s)."""
        with self.lock:
            cube, now = self.scene.cube_pos().tolist(), float(self.data.time)
        return {"cube": cube, "success": self.success(), "time": now}

    def joint_positions(self) -> np.ndarray:
        """The scene's joint angles (rad; the gripper's opening in m): privileged, for tests."""
        with self.lock:
            return self.scene.joint_pos().copy()

    def open_camera(self, camera: str, height: int, width: int) -> SceneCamera:
        """A renderer of ``camera`` for the calling thread only (each camera thread owns its GL context)."""
        if camera not in self.config.cameras:
            raise ValueError(f"the simulation renders the cameras {list(self.config.cameras)}, not {camera!r}")
        return SceneCamera(self, camera, height, width)

    # ------------------------------------------------------------------------- physics
    def _run(self) -> None:
        dt = float(self.model.opt.timestep)
        start = time.perf_counter()
        start_sim = float(self.data.time)
        while not self._stop.is_set():
            with self.lock:
                behind = (time.perf_counter() - start) - (float(self.data.time) - start_sim)
                steps = int(behind / dt)
                if steps > 0:
                    if steps * dt > 0.01:
                        self.lagging_updates += 1
                    self._apply_goals()
                    mujoco.mj_step(self.model, self.data, nstep=min(steps, 25))
                    self.physics_steps += min(steps, 25)
                    if steps > 25:  # far behind (a paused process): do not try to catch up
                        start = time.perf_counter()
                        start_sim = float(self.data.time)
                    self._track_lift()
                    self._publish_positions()
            time.sleep(self.config.physics_period_s)

    def _apply_goals(self) -> None:
        joints = self.scene.joint_pos()
        for i, (name, motor_id) in enumerate(MOTOR_IDS.items()):
            if self.bus.torque_enabled(motor_id):
                self.data.ctrl[i] = ticks_to_joint(name, self.bus.physical_goal_position(motor_id))
            else:  # a limp servo: the simulation keeps the joint where it is (see the module docstring)
                self.data.ctrl[i] = joints[i]

    def _track_lift(self) -> None:
        lifted = self.scene.cube_pos()[2] - self._cube_z0 > self.config.lift_height
        if not lifted:
            self._lifted_since = None
        elif self._lifted_since is None:
            self._lifted_since = float(self.data.time)

    def _publish_positions(self) -> None:
        for name, value in zip(JOINT_NAMES, self.scene.joint_pos(), strict=True):
            self.bus.set_present_position(MOTOR_IDS[name], joint_to_ticks(name, float(value)))


class SceneCamera:
    """One camera of a :class:`SimulatedSO101`, rendered on demand with its own renderer."""

    def __init__(self, simulation: SimulatedSO101, camera: str, height: int, width: int) -> None:
        self.simulation, self.camera = simulation, camera
        self.renderer = mujoco.Renderer(simulation.model, height, width)
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0

    def read(self) -> np.ndarray:
        with self.simulation.lock:  # the physics thread does not step mid-update
            self.renderer.update_scene(self.simulation.data, camera=self.camera)
        return self.renderer.render().copy()

    def close(self) -> None:
        self.renderer.close()


def joint_to_ticks(name: str, value: float) -> int:
    """A scene joint value (rad, or the gripper's opening in m) as the servo's raw position."""
    per_unit = GRIPPER_TICKS / GRIPPER_SPAN if name == "gripper" else TICKS_PER_RAD
    ticks = ZERO_TICK + value * per_unit
    return int(np.clip(round(ticks), 0, TICKS_PER_TURN - 1))


def ticks_to_joint(name: str, ticks: int) -> float:
    if name == "gripper":
        return (ticks - ZERO_TICK) / GRIPPER_TICKS * GRIPPER_SPAN
    return (ticks - ZERO_TICK) / TICKS_PER_RAD


def scene_units() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(scale, offset)`` per joint with ``scene = robot * scale + offset``: LeRobot's SO-101 units
    (degrees, gripper 0..100) under this class's calibration -> the scene's (rad, m)."""
    scale = tuple([np.pi / 180] * 5 + [GRIPPER_SPAN / 100])
    return scale, (0.0,) * len(JOINT_NAMES)


def widen_reply_window(bus, extra_ms: float = 200.0) -> None:
    """Give LeRobot's ``FeetechMotorsBus`` ``extra_ms`` more to wait for each reply, on this bus only.

    Why: the emulated servos answer from a thread of this process. A real bus replies within
    microseconds, and LeRobot waits ~50 ms; on a loaded CPU the emulator thread is sometimes not
    scheduled within that (about 1 read in 5000 at load 5 on 2 cores), and a missed ping at connect
    fails the connect outright (LeRobot pings once). Waiting longer changes nothing when the reply
    is prompt."""
    port = bus.port_handler
    set_timeout = port.setPacketTimeout

    def patient(packet_length):
        set_timeout(packet_length)
        port.packet_timeout += extra_ms

    port.setPacketTimeout = patient
