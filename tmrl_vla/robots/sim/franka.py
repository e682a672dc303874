"""A simulated Franka FR3 with a pick scene and cameras, for ``recipes/finetune_franka.py --simulated=true``.

The arm is franky-sim's: a MuJoCo FR3 behind libfranka's network protocol on a loopback address,
so the ``franka_franky`` robot (franky, the same client as on a real arm) drives it. franky-sim
needs MuJoCo 4 and the project keeps its own MuJoCo, so the simulator runs in a virtual
environment of its own (``bash scripts/franka_sim.sh install``) and this class starts it there,
running ``franka_scene.py`` (beside this file): franky-sim's FR3 plus a cube and fixed cameras. The
scene answers on a TCP port of 127.0.0.1 (:mod:`~tmrl_vla.robots.sim.scene_link`'s protocol):
camera frames for the ``mujoco_sim`` camera type, the simulated person's resets and success labels.
Everything stays on loopback addresses.

Which Python runs it: ``SimulatedFrankaConfig.python``, else ``$FRANKY_SIM_PYTHON``, else the
``python`` beside ``$FRANKY_SIM`` (franky-sim's executable), else ``$FRANKY_SIM_VENV/bin/python``,
else ``.cache/franky-sim/bin/python`` under the working directory (where the install script puts it).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tmrl_vla.robots.sim.registry import register, unregister
from tmrl_vla.robots.sim.scene_link import SceneCamera, SceneConnection

SCENE_SCRIPT = Path(__file__).with_name("franka_scene.py")
CAMERAS = ("front", "side")  # the scene's fixed cameras (franka_scene.CAMERAS)
# franky-sim's initial pose (rad): where the simulated arm starts, and the recipe's home.
HOME = (0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785)
INSTALL_HINT = "bash scripts/franka_sim.sh install (or point FRANKY_SIM_PYTHON at a Python with franky-sim)"


@dataclass(frozen=True)
class SimulatedFrankaConfig:
    name: str = "franka_sim"  # what the mujoco_sim cameras look it up by; one running simulation per name
    hostname: str = "127.0.0.1"  # the arm's loopback address (franky-sim serves one arm per address)
    image_size: int = 64  # camera renders are image_size x image_size
    cameras: tuple[str, ...] = ("front",)  # scene cameras that can be read ("front", "side")
    camera_fps: int | None = None  # frames per second of the mujoco_sim cameras; None: the control rate
    lift_height: float = 0.04  # the cube counts as picked when lifted this far (m) ...
    hold_s: float = 0.12  # ... for this long
    start_timeout_s: float = 60.0  # the simulator must be listening within this
    python: str | None = None  # franky-sim's Python (None: found as the module docstring says)

    def __post_init__(self) -> None:
        if not self.hostname.startswith("127."):
            raise ValueError(f"the simulated Franka serves loopback addresses only, not {self.hostname!r}")
        unknown = set(self.cameras) - set(CAMERAS)
        if unknown or not self.cameras:
            raise ValueError(f"cameras must be some of {list(CAMERAS)}, got {list(self.cameras)}")


def franky_sim_python(config: SimulatedFrankaConfig) -> str:
    candidates = [
        config.python,
        os.environ.get("FRANKY_SIM_PYTHON"),
        str(Path(os.environ["FRANKY_SIM"]).with_name("python")) if os.environ.get("FRANKY_SIM") else None,
        str(Path(os.environ["FRANKY_SIM_VENV"]) / "bin" / "python") if os.environ.get("FRANKY_SIM_VENV") else None,
        str(Path(".cache") / "franky-sim" / "bin" / "python"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    raise FileNotFoundError(f"franky-sim's Python was not found: {INSTALL_HINT}")


class SimulatedFranka:
    """``start()`` -> the arm's address; then ``FrankaConfig(ip=..., realtime=False)`` connects to it."""

    def __init__(self, config: SimulatedFrankaConfig | None = None) -> None:
        self.config = config or SimulatedFrankaConfig()
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self._log_dir = Path(tempfile.mkdtemp(prefix="franka_sim_"))  # what the simulator prints; removed by stop()
        self._control: SceneConnection | None = None
        self._lock = threading.Lock()

    def start(self, seed: int = 0) -> str:
        c = self.config
        try:
            register(c.name, self)
            command = [
                franky_sim_python(c),
                str(SCENE_SCRIPT),
                f"--hostname={c.hostname}",
                f"--cameras={','.join(c.cameras)}",
                f"--image-size={c.image_size}",
                f"--seed={seed}",
                f"--lift={c.lift_height}",
                f"--hold-s={c.hold_s}",
            ]
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
            with open(self._log_dir / "franka_scene.log", "w") as log:
                self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
            ready = self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        self.port = int(ready["port"])
        self._control = SceneConnection(self.port)
        return str(ready["hostname"])

    def _wait_until_ready(self) -> dict:
        deadline = time.monotonic() + self.config.start_timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not selector.select(timeout=0.2):
                    if self.process.poll() is not None:
                        break
                    continue
                line = self.process.stdout.readline()
                if line.startswith("SCENE_READY "):
                    return json.loads(line.split(" ", 1)[1])
                if not line and self.process.poll() is not None:
                    break
        tail = self.log[-2000:]
        exited = self.process.poll() is not None
        status = "exited" if exited else f"did not answer within {self.config.start_timeout_s} s"
        raise RuntimeError(f"the simulated Franka {status} (is {self.config.hostname} in use by another?):\n{tail}")

    def stop(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # the scene shuts its servers down
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None
        unregister(self.config.name, self)
        shutil.rmtree(self._log_dir, ignore_errors=True)

    def __enter__(self) -> SimulatedFranka:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def log(self) -> str:
        """What the simulator printed (franky-sim's warnings and errors), while it runs."""
        path = self._log_dir / "franka_scene.log"
        return path.read_text() if path.exists() else ""

    # ------------------------------------------------------------------------- the person's view
    def reset_scene(self, seed: int) -> None:
        """Put the cube back somewhere new (the arm is not touched: the robot env drives it home)."""
        with self._lock:
            self._scene().request({"op": "reset", "seed": int(seed)})

    def success(self) -> bool:
        """Whether the cube has been held up for ``hold_s`` (what a person would label a success)."""
        return bool(self.state()["success"])

    def state(self) -> dict:
        """The cube's position (m), whether it counts as picked, the simulation's time."""
        with self._lock:
            return self._scene().request({"op": "state"})

    def open_camera(self, camera: str, height: int, width: int) -> SceneCamera:
        """A connection that fetches ``camera``'s frames (for the ``mujoco_sim`` camera type)."""
        if camera not in self.config.cameras:
            raise ValueError(f"the simulation renders the cameras {list(self.config.cameras)}, not {camera!r}")
        size = self.config.image_size
        if (height, width) != (size, size):
            raise ValueError(f"the simulated Franka renders {size} x {size} images, not {height} x {width}")
        self._scene()  # running, or an error saying so
        return SceneCamera(self.port, camera)

    def _scene(self) -> SceneConnection:
        if self._control is None:
            raise RuntimeError("the simulated Franka is not running: start() it first")
        return self._control
