"""Registers the ``scripted_expert_sim`` teleoperator type with LeRobot (imported by every LeRobot command line)."""

from tmrl_vla.robots.config_scripted_expert import ScriptedExpertTeleopConfig

__all__ = ["ScriptedExpertTeleopConfig"]
