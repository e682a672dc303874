"""A LeRobot ``Camera`` that renders a simulated robot's scene camera, as a USB camera would stream.

The simulation is one started in this process (by name) or one served by another process (an
address ``127.0.0.1:<port>``, :mod:`~tmrl_vla.robots.sim.scene_link`): the latter is how LeRobot's
own command lines (``lerobot-record`` ...) see a simulated arm.

Like LeRobot's OpenCV camera, a background thread produces frames at ``fps`` and the reads return
the newest one; the thread also owns the renderer, because a GL context is current in one thread
only. The renders use the scene's own settings (no shadows or reflections), so a frame equals what
the pick scene's env gives a policy for the same state and size.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from lerobot.cameras.camera import Camera

from tmrl_vla.robots.sim.config_mujoco_sim_camera import MujocoSimCameraConfig
from tmrl_vla.robots.sim.registry import running_simulation, running_simulations
from tmrl_vla.robots.sim.scene_link import SceneCamera, parse_address


class MujocoSimCamera(Camera):
    def __init__(self, config: MujocoSimCameraConfig) -> None:
        super().__init__(config)
        self.config = config
        self._frame: np.ndarray | None = None
        self._frame_time = 0.0
        self._frame_index = 0
        self._consumed_index = 0
        self._new_frame = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __str__(self) -> str:
        return f"MujocoSimCamera({self.config.simulation}/{self.config.camera})"

    @property
    def is_connected(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @staticmethod
    def find_cameras() -> list[dict[str, Any]]:
        return [
            {"type": "mujoco_sim", "simulation": name, "camera": cam}
            for name, sim in running_simulations().items()
            for cam in sim.config.cameras
        ]

    def connect(self, warmup: bool = True) -> None:
        address = parse_address(self.config.simulation)
        if address is not None:
            port = address[1]

            def open_camera():  # over the network: the frames come from the simulation's process
                return SceneCamera(port, self.config.camera)

        else:
            simulation = running_simulation(self.config.simulation)
            if self.config.camera not in simulation.config.cameras:
                cameras = list(simulation.config.cameras)
                raise ValueError(f"{self}: the simulation renders the cameras {cameras}, not {self.config.camera!r}")

            def open_camera():
                return simulation.open_camera(self.config.camera, self.config.height, self.config.width)

        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(open_camera,), name=str(self), daemon=True)
        self._thread.start()
        if warmup:
            self.async_read(timeout_ms=5000)

    def _run(self, open_camera) -> None:
        try:
            camera = open_camera()  # in this thread: a renderer's GL context is current in one thread only
        except BaseException as err:
            self._error = err
            return
        period = 1.0 / self.config.fps
        next_frame = time.perf_counter()
        try:
            while not self._stop.is_set():
                frame = camera.read()
                with self._new_frame:
                    self._frame, self._frame_time = frame, time.perf_counter()
                    self._frame_index += 1
                    self._new_frame.notify_all()
                next_frame += period
                delay = next_frame - time.perf_counter()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_frame = time.perf_counter()
        except BaseException as err:  # raised to the reader on its next read
            self._error = err
        finally:
            camera.close()

    def _check(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"{self} stopped") from self._error
        if not self.is_connected:
            raise ConnectionError(f"{self} is not connected")

    def read(self) -> np.ndarray:
        """The next frame (blocking, up to a second): this camera has no synchronous capture."""
        return self.async_read(timeout_ms=1000)

    def async_read(self, timeout_ms: float = 200) -> np.ndarray:
        deadline = time.perf_counter() + timeout_ms / 1e3
        with self._new_frame:
            while self._frame_index == self._consumed_index:
                self._check()
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise TimeoutError(f"{self}: no new frame within {timeout_ms} ms")
                self._new_frame.wait(min(left, 0.05))
            self._consumed_index = self._frame_index
            return self._frame

    def read_latest(self, max_age_ms: int = 500) -> np.ndarray:
        """The newest frame; older than the config's ``max_age_ms`` (which replaces the caller's) is an error."""
        max_age_ms = self.config.max_age_ms
        self._check()
        with self._new_frame:
            if self._frame is None:
                raise RuntimeError(f"{self} has not rendered a frame yet")
            age_ms = (time.perf_counter() - self._frame_time) * 1e3
            if age_ms > max_age_ms:
                raise TimeoutError(f"{self}: the latest frame is {age_ms:.0f} ms old (more than {max_age_ms} ms)")
            return self._frame

    def disconnect(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
