"""The safety layer: limits, speed, e-stop, watchdog, rate and workspace, under fuzzing."""

import numpy as np
import pytest

from tmrl_vla.robots.safety import SAFETY_PRESETS, SafetyConfig, SafetyLayer, safety_preset


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def adversarial(rng: np.random.Generator, config: SafetyConfig, tick: int) -> np.ndarray | None:
    """Random commands, and the ones that break controllers: NaN, inf, huge, jumps between limits."""
    lo, hi = np.asarray(config.lower), np.asarray(config.upper)
    kind = tick % 8
    if tick % 500 >= 490:
        return None  # nothing from the policy for a third of a second
    if kind == 0:
        return rng.uniform(lo - 10 * (hi - lo), hi + 10 * (hi - lo))
    if kind == 1:
        return np.where(rng.random(lo.shape) < 0.5, lo - 1e9, hi + 1e9)
    if kind == 2:
        bad = rng.uniform(lo, hi)
        bad[rng.integers(len(bad))] = rng.choice([np.nan, np.inf, -np.inf])
        return bad
    if kind == 3:
        return hi if (tick // 8) % 2 else lo  # full-range jumps, back and forth
    if kind == 4:
        return None  # the policy had nothing this tick
    return rng.uniform(lo, hi)


@pytest.mark.parametrize("robot", sorted(SAFETY_PRESETS))
def test_ten_thousand_fuzzed_commands_never_leave_the_limits(robot):
    config = safety_preset(robot)
    clock = Clock()
    layer = SafetyLayer(config, clock=clock)
    rng = np.random.default_rng(0)
    lo, hi, step = (np.asarray(v) for v in (config.lower, config.upper, config.max_step))
    measured = (lo + hi) / 2
    beyond, too_fast, sent = 0, 0, 0
    for tick in range(10_000):
        clock.t += 1 / 30
        if tick % 97 == 0:
            layer.estop()
        if tick % 97 == 3:
            layer.release()
        reading_time = clock.t - (0.5 if tick % 211 == 0 else 0.0)  # now and then a stale reading
        out = layer.filter(adversarial(rng, config, tick), measured, reading_time=reading_time)
        if out is None:
            continue
        sent += 1
        beyond += int(np.any(out < lo) or np.any(out > hi) or not np.all(np.isfinite(out)))
        too_fast += int(np.any(np.abs(out - measured) > step + 1e-9))
        # the arm follows most of the way, with a little noise (a measured position may sit anywhere)
        noise = rng.normal(0, 0.1, size=out.shape) * step
        measured = np.clip(measured + 0.8 * (out - measured) + noise, lo, hi)
        if tick % 331 == 0:  # a push: the arm is moved away by hand, far more than one step
            measured = np.clip(measured + 20 * step * rng.choice([-1, 1], size=out.shape), lo, hi)
    assert sent > 9_000 and beyond == 0 and too_fast == 0
    assert {"limit", "speed", "not_finite", "estop", "stale_reading", "late_command"} <= set(layer.counts)


def test_estop_and_watchdog_hold_from_the_next_tick():
    config = safety_preset("so101_follower")
    clock = Clock()
    layer = SafetyLayer(config, clock=clock)
    measured = np.zeros(6)
    move = np.full(6, 3.0)
    clock.t = 1.0
    first = layer.filter(move, measured, reading_time=clock.t)
    assert np.allclose(first, 3.0)
    layer.estop()
    clock.t += 1 / 30
    assert np.array_equal(layer.filter(np.full(6, 4.0), first, reading_time=clock.t), first)  # held
    layer.release()
    clock.t += 1 / 30
    assert np.allclose(layer.filter(np.full(6, 4.0), first, reading_time=clock.t), 4.0)
    clock.t += 1 / 30
    stale = layer.filter(np.full(6, 6.0), np.full(6, 4.0), reading_time=clock.t - 0.3)  # reading 0.3 s old
    assert np.allclose(stale, 4.0) and layer.counts["stale_reading"] == 1
    clock.t += 0.25  # no command for longer than stale_after_s: the policy is late
    assert np.allclose(layer.filter(None, np.full(6, 4.0), reading_time=clock.t), 4.0)
    assert layer.counts["late_command"] == 1


def test_commands_faster_than_the_rate_are_not_sent():
    clock = Clock()
    layer = SafetyLayer(safety_preset("franka_franky"), clock=clock)
    q = np.array([0.0, 0.0, 0.0, -1.5, 0.0, 1.5, 0.0, 0.04])
    assert layer.filter(q, q, reading_time=0.0) is not None
    clock.t = 0.005  # 200 Hz against a 60 Hz limit
    assert layer.filter(q, q, reading_time=clock.t) is None and layer.counts["rate"] == 1


def test_a_command_that_leaves_the_workspace_is_held():
    config = SafetyConfig(("a.pos", "b.pos"), (-1.0, -1.0), (1.0, 1.0), (0.5, 0.5), workspace=((-0.5,) * 3, (0.5,) * 3))
    clock = Clock()
    layer = SafetyLayer(config, clock=clock, forward_kinematics=lambda q: np.array([q[0], q[1], 0.0]))
    assert np.allclose(layer.filter(np.array([0.2, 0.2]), np.zeros(2), reading_time=0.0), 0.2)
    clock.t = 1.0
    held = layer.filter(np.array([0.6, 0.2]), np.array([0.2, 0.2]), reading_time=clock.t)  # x would be 0.6
    assert np.allclose(held, 0.2) and layer.counts["workspace"] == 1
    with pytest.raises(ValueError, match="forward kinematics"):
        SafetyLayer(config)


def test_bad_configs_and_readings_are_refused():
    with pytest.raises(ValueError, match="one value per joint"):
        SafetyConfig(("a", "b"), (0.0,), (1.0, 1.0), (0.1, 0.1))
    with pytest.raises(ValueError, match="below its upper limit"):
        SafetyConfig(("a",), (1.0,), (0.0,), (0.1,))
    with pytest.raises(KeyError, match="no safety preset for robot type 'koch_follower'"):
        safety_preset("koch_follower")
    layer = SafetyLayer(safety_preset("so100_follower"))
    with pytest.raises(ValueError, match="6 finite values"):
        layer.filter(np.zeros(6), np.full(6, np.nan), reading_time=layer.clock())
    with pytest.raises(ValueError, match="must have 6 values"):
        layer.filter(np.zeros(7), np.zeros(6), reading_time=layer.clock())
