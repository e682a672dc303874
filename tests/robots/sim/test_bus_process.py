"""The emulated bus served from its own process: LeRobot's bus in this process talks to it, and the
simulation's side (positions in, goals and torque out) goes through the shared file."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from lerobot.motors import Motor, MotorNormMode
from lerobot.motors.feetech import FeetechMotorsBus
from test_feetech_emulator import connect_with_one_retry, eventually  # (pytest puts this folder on sys.path)

from tmrl_vla.robots.sim.bus_process import FeetechBusProcess
from tmrl_vla.robots.sim.feetech_emulator import FeetechBusEmulator

pytestmark = pytest.mark.timeout(60)


def test_lerobots_bus_reads_the_published_positions_and_its_goals_and_torque_come_back():
    bus_process = FeetechBusProcess(motor_ids=(1, 2))
    bus_process.write_register(2, "Homing_Offset", -100)  # held by the servo before anyone connects
    bus_process.set_present_position(1, 1000)
    bus_process.set_present_position(2, 3000)
    with bus_process:
        motors = {"a": Motor(1, "sts3215", MotorNormMode.DEGREES), "b": Motor(2, "sts3215", MotorNormMode.DEGREES)}
        bus = FeetechMotorsBus(bus_process.port, motors)
        connect_with_one_retry(bus, bus)
        try:
            assert bus.read("Homing_Offset", "b", normalize=False) == -100
            present = bus.sync_read("Present_Position", normalize=False)
            assert present == {"a": 1000, "b": 3100}  # physical - offset, as the servo reports it
            assert not bus_process.torque_enabled(1)
            bus.enable_torque()
            assert bus_process.torque_enabled(1) and bus_process.torque_enabled(2)
            assert bus_process.physical_goal_position(1) == 1000  # torque on holds where it is
            bus.sync_write("Goal_Position", {"a": 1500, "b": 2000}, normalize=False)  # no reply: watch for it
            assert eventually(lambda: bus_process.physical_goal_position(1) == 1500, timeout_s=2.0)
            # the goal comes back physical (offset added), and no later than the bus's next packet
            bus.sync_read("Present_Position", normalize=False)
            assert bus_process.physical_goal_position(2) == 1900
            bus_process.set_present_position(1, 1234)
            assert bus.read("Present_Position", "a", normalize=False) == 1234
            bus.disable_torque()
            assert not bus_process.torque_enabled(1)
        finally:
            bus.disconnect(disable_torque=False)
        with pytest.raises(RuntimeError, match="written before start"):
            bus_process.write_register(1, "Homing_Offset", 5)
    assert not os.path.exists(bus_process._state_path)
    bus_process.stop()  # twice is fine


PINGER = """
import json, sys, time
import serial
port = serial.Serial(sys.argv[1], timeout=10.0)
PING = bytes([0xFF, 0xFF, 1, 2, 1, (~(1 + 2 + 1)) & 0xFF])  # instruction 1 to motor 1, no parameters
print("ready", flush=True)
end, pings = time.monotonic() + float(sys.argv[2]), []
while time.monotonic() < end:
    sent = time.monotonic()
    port.write(PING)
    reply = port.read(6)
    pings.append((sent, time.monotonic(), reply[:3].hex()))
    time.sleep(0.02)
print(json.dumps(pings), flush=True)
"""


def hold_the_interpreter_lock(seconds: float) -> tuple[float, float]:
    """One C call that never lets the lock go, as a long garbage collection of a big process does
    (a full one of the served simulation's heap takes about 0.13 s here); returns when it was held."""
    timings = []
    for _ in range(3):  # the fastest of three: a slowed one would shorten the hold
        start = time.perf_counter()
        sum(range(1_000_000))
        timings.append(time.perf_counter() - start)
    n = int(seconds / min(timings) * 1_000_000)
    held_from = time.monotonic()
    sum(range(n))
    return held_from, time.monotonic()


@pytest.mark.parametrize("own_process", [False, True], ids=["thread", "own_process"])
def test_replies_wait_for_the_simulations_interpreter_only_when_served_from_its_thread(own_process):
    """Another process pings, waiting for each reply as long as it takes, while this one holds its
    interpreter lock for about 1.5 s: a thread's replies come only once the hold ends, a bus process's
    during it. The test compares reply times with the hold, not with the SDK's 34 ms window, so a
    slow or loaded machine stretches both sides alike. (Both clocks are the system's monotonic one.)"""
    bus = FeetechBusProcess((1,)) if own_process else FeetechBusEmulator((1,))
    with bus:
        pinger = subprocess.Popen([sys.executable, "-c", PINGER, bus.port, "3.0"], stdout=subprocess.PIPE, text=True)
        assert pinger.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        held_from, held_until = hold_the_interpreter_lock(1.5)
        pings = json.loads(pinger.stdout.readline())
        pinger.wait(timeout=30)
    assert held_until - held_from > 0.5 and all(reply == "ffff01" for _, _, reply in pings), pings
    # replies that arrived well inside the hold (the lock may change hands once as it starts)
    during = [answered - held_from for _, answered, _ in pings if held_from + 0.1 <= answered <= held_until - 0.1]
    report = f"hold {held_until - held_from:.2f} s; replies during it, from its start: {[round(t, 3) for t in during]}"
    if own_process:  # one reply after another while the lock was held
        assert len(during) >= 5, report
    else:  # none: the ping in flight waited for the end of the hold
        assert not during, report


def test_unknown_motors_are_refused():
    with pytest.raises(ValueError, match="distinct"):
        FeetechBusProcess(motor_ids=(1, 1))
    bus_process = FeetechBusProcess(motor_ids=(1,))
    try:
        with pytest.raises(KeyError, match="no motor with id 7"):
            bus_process.write_register(7, "Homing_Offset", 0)
    finally:
        bus_process.stop()


def test_the_bus_process_ends_when_the_simulation_is_killed():
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from tmrl_vla.robots.sim.bus_process import FeetechBusProcess\n"
            "bus = FeetechBusProcess((1,)); bus.start(); print(bus._child.pid, flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()

    def gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        # an exited child of a killed parent is reaped by init; until then it is a zombie
        with open(f"/proc/{child}/stat") as stat:
            return stat.read().split(") ", 1)[1].startswith("Z")

    assert eventually(gone, timeout_s=10.0)
