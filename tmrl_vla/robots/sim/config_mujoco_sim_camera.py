"""The ``mujoco_sim`` LeRobot camera type: a camera of a simulated robot running in this process.

``--robot.cameras="{front: {type: mujoco_sim, camera: front, width: 64, height: 64, fps: 25}}"``.
Registered with LeRobot's ``CameraConfig`` registry when this module is imported, which the
``lerobot_camera_mujoco_sim`` plugin distribution does in every LeRobot command line. LeRobot finds
the camera class (:class:`~tmrl_vla.robots.sim.mujoco_sim_camera.MujocoSimCamera`) from this
config's module and name.
"""

from __future__ import annotations

from dataclasses import dataclass

from lerobot.cameras.configs import CameraConfig


@CameraConfig.register_subclass("mujoco_sim")
@dataclass(kw_only=True)
class MujocoSimCameraConfig(CameraConfig):
    camera: str = "front"  # the scene camera to render ("front" or "wrist" in the pick scene)
    # The simulation: the name of one running in this process (SimulatedSO101Config.name), or the
    # address 127.0.0.1:<port> of one served by another (python -m tmrl_vla.robots.sim.serve).
    simulation: str = "so101_sim"
    # A frame older than this is an error (TimeoutError). It replaces the limit of LeRobot's robots,
    # which read with its 500 ms default: the renderer shares this machine's CPU with the policy,
    # the learner and the physics, and on a loaded CPU (measured: 567 ms, 2 cores at load 5) a frame
    # can be late by more than a real camera's would.
    max_age_ms: int = 2000

    def __post_init__(self) -> None:
        self.fps = 25 if self.fps is None else self.fps
        if self.width is None or self.height is None:
            raise ValueError("a mujoco_sim camera needs width and height (the resolution the policy reads)")
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
