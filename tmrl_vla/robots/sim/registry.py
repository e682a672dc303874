"""The simulations running in this process, by name: what ``mujoco_sim`` cameras and the scripted
expert teleoperator find them by, since LeRobot builds those from configs that can only hold a name."""

from __future__ import annotations

import threading

_RUNNING: dict[str, object] = {}
_LOCK = threading.Lock()


def register(name: str, simulation: object) -> None:
    with _LOCK:
        if name in _RUNNING:
            raise RuntimeError(f"a simulation named {name!r} is already running in this process")
        _RUNNING[name] = simulation


def unregister(name: str, simulation: object) -> None:
    with _LOCK:
        if _RUNNING.get(name) is simulation:
            del _RUNNING[name]


def running_simulations() -> dict[str, object]:
    """Every simulation started in this process, by name."""
    with _LOCK:
        return dict(_RUNNING)


def running_simulation(name: str):
    """The simulation started in this process under ``name``."""
    with _LOCK:
        simulation = _RUNNING.get(name)
        known = sorted(_RUNNING)
    if simulation is None:
        raise LookupError(
            f"no simulation named {name!r} runs in this process (running: {known or 'none'}); the recipes "
            "start one with --simulated=true (tmrl_vla.robots.sim.so101.SimulatedSO101, "
            "tmrl_vla.robots.sim.franka.SimulatedFranka)"
        )
    return simulation
