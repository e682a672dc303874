"""The control loop: the arm never waits for inference, chunks line up with time, failures hold."""

import time

import numpy as np
import pytest

from tmrl_vla.robots.control import ControlConfig, ControlLoop
from tmrl_vla.robots.safety import SafetyConfig, SafetyLayer


def arm(n=2, step=100.0):
    config = SafetyConfig(tuple(f"j{i}.pos" for i in range(n)), (-1000.0,) * n, (1000.0,) * n, (step,) * n)
    state = {"q": np.zeros(n), "sent": []}

    def read():
        return {"q": state["q"].copy(), "tick": len(state["sent"])}, state["q"].copy(), time.monotonic()

    def send(command):
        state["sent"].append(command.copy())
        state["q"] = command.copy()

    return SafetyLayer(config), read, send, state


def test_inference_slower_than_a_tick_never_stops_the_loop():
    safety, read, send, state = arm()
    seen = []

    def infer(observation):
        seen.append(observation["tick"])
        time.sleep(0.08)  # more than two ticks at 30 Hz
        return np.stack([np.full(2, 10.0 * observation["tick"] + k) for k in range(10)])

    loop = ControlLoop(read, send, infer, safety, ControlConfig(fps=30, refill_at=3))
    stats = loop.run(60)
    summary = stats.summary(0.005)
    assert summary["ticks"] == 60 and stats.chunks >= 5
    assert summary["start_delay_ms"]["median"] < 5  # ticks keep their times while inference runs
    assert stats.empty_ticks <= 4  # only before the first chunk: the arm was held, not stalled
    # each chunk is played from the action of the tick it arrived in, not from its start
    first = next(i for i, c in enumerate(state["sent"]) if c[0] != 0.0)
    assert state["sent"][first][0] == pytest.approx(first - seen[0], abs=0)


def test_a_failing_policy_stops_the_loop_with_the_arm_held():
    safety, read, send, state = arm()

    def infer(observation):
        raise ValueError("the model is gone")

    loop = ControlLoop(read, send, infer, safety)
    with pytest.raises(RuntimeError, match="policy inference failed") as err:
        loop.run(30)
    assert isinstance(err.value.__cause__, ValueError)
    assert all(np.array_equal(c, np.zeros(2)) for c in state["sent"])  # only holds were sent
