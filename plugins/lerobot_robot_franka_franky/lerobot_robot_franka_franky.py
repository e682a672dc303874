"""LeRobot plugin entry point: importing it registers the ``franka_franky`` robot type with LeRobot.

LeRobot imports this module by its distribution name (``register_third_party_plugins``). The config
and the robot live in :mod:`tmrl_vla.robots.franka`, where ``make_robot_from_config`` finds the
robot class from the config class; importing that module needs no franky (only connecting does).
"""

from tmrl_vla.robots.franka import Franka, FrankaConfig

__all__ = ["Franka", "FrankaConfig"]
