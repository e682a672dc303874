"""A pick scene around franky-sim's FR3, served to another process: run by franky-sim's own Python.

    <franky-sim venv>/bin/python franka_scene.py --hostname 127.0.0.1 --cameras front --image-size 64

This file is a script for the simulator's virtual environment (``scripts/franka_sim.sh install``),
not a module of the project: it imports only franky-sim, MuJoCo, NumPy, the standard library and
``scene_link.py`` beside it (by its file name: a script's directory is on its import path), because
franky-sim brings its own MuJoCo (4.x) and the project keeps another. The project starts it
through :class:`tmrl_vla.robots.sim.franka.SimulatedFranka` and talks to it in two ways:

* the arm, as to a real Franka: libfranka's protocol on ``--hostname`` (franky-sim's server, ports
  1337 and 1338), which the ``franka_franky`` robot connects to;
* the scene, on a TCP port of 127.0.0.1 (the one printed at start), served by
  ``scene_link.SceneServer``: camera frames, resets (the cube put back somewhere new, as a person
  would) and the state (the cube's position, whether it counts as picked).

It prints one line ``SCENE_READY {"hostname": ..., "port": ...}`` once both servers listen. The
physics runs at franky-sim's 1 kHz in the main thread, at most, and during a motion in step with
the controller (see LOCKSTEP_TIMEOUT_S); each connection renders in its own thread with its own GL
context, under the lock that the physics step also takes.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import threading
import time
import xml.etree.ElementTree as ET

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering, before mujoco is imported

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from franky_sim import SimulationServer  # noqa: E402
from franky_sim.mujoco_simulator import MujocoSimulator  # noqa: E402
from scene_link import SceneServer  # noqa: E402  (beside this script; see the module docstring)

CUBE_HALF = 0.02  # m
CUBE_X = (0.45, 0.60)  # where the cube is put (m, in the arm's base frame)
CUBE_Y = (-0.12, 0.12)
# How long the physics waits, during a motion, for the controller's command answering the last state.
# Why it waits at all: libfranka's client (franky) treats a late state as missed control steps and
# extrapolates its own trajectory as the real arm would (constant acceleration), but franky-sim
# holds the last command instead, so after a stall of the client (a busy machine) the two disagree
# and later motions start from a wrong desired state: seen as a joint driven to its limit. Waiting
# keeps them in step; a simulation may run slower than the wall clock, the real arm may not.
LOCKSTEP_TIMEOUT_S = 1.0
CAMERAS = {  # name: (position, xyaxes) of fixed cameras looking at the cube's region
    "front": ("1.05 0.0 0.6", "0 1 0 -0.55 0 0.83"),
    "side": ("0.35 -0.85 0.55", "1 0 0 0 0.5 0.87"),
}


def build_scene(cameras: list[str]) -> tuple[MujocoSimulator, object]:
    sim = MujocoSimulator()
    sim.init()
    robot = sim.add_robot()
    asset = sim.scene.find("asset")
    ET.SubElement(asset, "material", name="cube_red", rgba="0.85 0.15 0.1 1")
    cube = ET.SubElement(sim.worldbody, "body", name="cube", pos=f"0.5 0 {CUBE_HALF}")
    ET.SubElement(cube, "freejoint", name="cube")
    ET.SubElement(
        cube, "geom", type="box", size=f"{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}", material="cube_red", mass="0.05"
    )
    for name in cameras:
        if name not in CAMERAS:
            raise SystemExit(f"unknown camera {name!r}: the scene has {sorted(CAMERAS)}")
        pos, xyaxes = CAMERAS[name]
        ET.SubElement(sim.worldbody, "camera", name=name, pos=pos, xyaxes=xyaxes, fovy="50")
    return sim, robot


class Scene:
    """The running simulation, as ``SceneServer`` serves it."""

    def __init__(self, sim: MujocoSimulator, cameras: list[str], lift: float, hold_s: float) -> None:
        self.sim, self.cameras, self.lift, self.hold_s = sim, cameras, lift, hold_s
        self.lock = threading.Lock()  # held by the physics step, scene updates and resets
        self.cube_z0 = CUBE_HALF
        self.lifted_since: float | None = None

    @property
    def cube_qpos(self) -> int:
        return int(self.sim.model.jnt_qposadr[self.sim.model.joint("cube").id])

    def reset_scene(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        model, data = self.sim.model, self.sim.data
        with self.lock:
            adr, dof = self.cube_qpos, int(model.jnt_dofadr[model.joint("cube").id])
            data.qpos[adr : adr + 3] = (rng.uniform(*CUBE_X), rng.uniform(*CUBE_Y), CUBE_HALF)
            data.qpos[adr + 3 : adr + 7] = (1.0, 0.0, 0.0, 0.0)
            data.qvel[dof : dof + 6] = 0.0
            mujoco.mj_forward(model, data)
            self.cube_z0, self.lifted_since = CUBE_HALF, None

    def track_lift(self) -> None:
        """After each physics step (lock held): when the cube went up ``lift`` and stayed there."""
        z = float(self.sim.data.qpos[self.cube_qpos + 2])
        if z - self.cube_z0 >= self.lift:
            if self.lifted_since is None:
                self.lifted_since = float(self.sim.data.time)
        else:
            self.lifted_since = None

    def state(self) -> dict:
        with self.lock:
            adr = self.cube_qpos
            cube = self.sim.data.qpos[adr : adr + 3].tolist()
            since, now = self.lifted_since, float(self.sim.data.time)
        return {"cube": cube, "success": since is not None and now - since >= self.hold_s, "time": now}

    def open_camera(self, camera: str, height: int, width: int) -> SceneCamera:
        """A renderer of ``camera`` for the calling thread (each connection owns its GL context)."""
        if camera not in self.cameras:
            raise ValueError(f"the scene renders {self.cameras}, not {camera!r}")
        return SceneCamera(self, camera, height, width)


class SceneCamera:
    def __init__(self, scene: Scene, camera: str, height: int, width: int) -> None:
        self.scene, self.camera = scene, camera
        self.renderer = mujoco.Renderer(scene.sim.model, height, width)

    def read(self) -> np.ndarray:
        with self.scene.lock:  # the physics does not step mid-update
            self.renderer.update_scene(self.scene.sim.data, camera=self.camera)
        return self.renderer.render()

    def close(self) -> None:
        self.renderer.close()


def wait_for_command(robot_server) -> None:
    """During a motion, wait (at most LOCKSTEP_TIMEOUT_S) until the controller's next command is there.

    It only looks (``select`` on the server's UDP socket, named by franky-sim's private attribute);
    ``process_commands`` reads the command on the next tick as always. Outside motions the client
    sends nothing, and a client that died mid-motion costs at most the timeout per tick until
    franky-sim notices the closed connection.
    """
    sock = robot_server._FrankaServer__udp_socket  # None until a client connects
    if sock is None or not robot_server.current_motion_id:
        return
    select.select([sock], [], [], LOCKSTEP_TIMEOUT_S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hostname", default="127.0.0.1", help="the arm's libfranka address (loopback only)")
    parser.add_argument("--port", type=int, default=0, help="the scene's port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--cameras", default="front", help="comma-separated: " + ", ".join(CAMERAS))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="where the cube starts")
    parser.add_argument("--lift", type=float, default=0.04, help="m the cube must rise to count as picked")
    parser.add_argument("--hold-s", type=float, default=0.12, help="... and for how long")
    args = parser.parse_args()
    if not args.hostname.startswith("127."):
        raise SystemExit(f"the simulated arm serves loopback addresses only, not {args.hostname}")
    cameras = [c for c in args.cameras.split(",") if c]
    sim, robot = build_scene(cameras)
    scene = Scene(sim, cameras, args.lift, args.hold_s)
    server = SimulationServer(sim, hostname_candidates=[args.hostname])
    server.init()  # binds libfranka's ports and starts the simulation
    for robot_server in server.robot_servers:
        if not hasattr(robot_server, "_FrankaServer__udp_socket"):
            raise SystemExit("this franky-sim has no FrankaServer UDP socket where 1.0.4 had it: see wait_for_command")
    scene.reset_scene(args.seed)
    requests = SceneServer(scene, image_size=args.image_size, port=args.port).start()
    print("SCENE_READY " + json.dumps({"hostname": robot.hostname, "port": requests.port}), flush=True)
    parent, ticks = os.getppid(), 0
    try:
        while True:  # franky-sim's 1 kHz tick (SimulationServer.run_once), with the scene's lock and lift check
            ticks += 1
            if ticks % 1000 == 0 and os.getppid() != parent:
                break  # whoever started the scene is gone (killed): do not hold the address forever
            start = time.perf_counter()
            for robot_server in server.robot_servers:
                robot_server.process_commands()
            with scene.lock:
                sim.step()
                scene.track_lift()
            for robot_server in server.robot_servers:
                robot_server.send_state()
            time.sleep(max(0.0, 0.001 - (time.perf_counter() - start)))
            for robot_server in server.robot_servers:
                wait_for_command(robot_server)
    except KeyboardInterrupt:
        pass
    finally:
        requests.stop()
        server.cleanup()
        sim.cleanup()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
