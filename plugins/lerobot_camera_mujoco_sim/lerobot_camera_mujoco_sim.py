"""Registers the ``mujoco_sim`` camera type with LeRobot (imported by every LeRobot command line)."""

from tmrl_vla.robots.sim.config_mujoco_sim_camera import MujocoSimCameraConfig

__all__ = ["MujocoSimCameraConfig"]
