"""The ``scripted_expert_sim`` LeRobot teleoperator type: the pick scene's scripted expert as a person.

Registered with LeRobot's ``TeleoperatorConfig`` registry when this module is imported. LeRobot's
``make_teleoperator_from_config`` does not know the type, so it falls back to
``make_device_from_device_class``: the device class is this config's name without ``Config``
(``ScriptedExpertTeleop``), looked for in this module's parent package, then in
``<parent>.scriptedexpertteleop``, then (this module being ``config_<x>``) in ``<parent>.<x>``:
:mod:`tmrl_vla.robots.scripted_expert`, where it is. This config is kept apart from the class so
that importing it (to parse ``--teleop.type=scripted_expert_sim``) loads no simulation.
"""

from __future__ import annotations

from dataclasses import dataclass

from lerobot.teleoperators.config import TeleoperatorConfig


@TeleoperatorConfig.register_subclass("scripted_expert_sim")
@dataclass(kw_only=True)
class ScriptedExpertTeleopConfig(TeleoperatorConfig):
    # The simulated SO-101: its name in this process (SimulatedSO101Config.name), or the address
    # 127.0.0.1:<port> of one served by another (python -m tmrl_vla.robots.sim.serve), whose expert acts.
    simulation: str = "so101_sim"
    seed: int = 0  # the expert's random generator: speed per attempt, noise on its targets
