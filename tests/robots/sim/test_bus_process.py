"""The emulated bus served from its own process: LeRobot's bus in this process talks to it, and the
simulation's side (positions in, goals and torque out) goes through the shared file."""

import os
import signal
import subprocess
import sys
import time

import pytest
from lerobot.motors import Motor, MotorNormMode
from lerobot.motors.feetech import FeetechMotorsBus
from test_feetech_emulator import eventually  # (pytest puts this folder on sys.path)

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
        bus.connect()
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
import sys, time
from lerobot.motors import Motor, MotorNormMode
from lerobot.motors.feetech import FeetechMotorsBus
bus = FeetechMotorsBus(sys.argv[1], {"a": Motor(1, "sts3215", MotorNormMode.DEGREES)})
bus.port_handler.openPort()
print("ready", flush=True)
end, missed, sent = time.monotonic() + 1.5, 0, 0
while time.monotonic() < end:
    sent += 1
    try:
        answered = bus.ping(1) is not None
    except IndexError:  # the SDK, reading a late reply to an earlier packet
        answered = False
    if not answered:
        missed += 1
        bus.port_handler.clearPort()
    time.sleep(0.002)
print(sent, missed, flush=True)
"""


def hold_the_interpreter_lock(seconds: float) -> None:
    """One C call that never lets the lock go, as a long garbage collection of a big process does
    (a full one of the served simulation's heap takes about 0.13 s here)."""
    start = time.perf_counter()
    sum(range(1_000_000))
    per_million = time.perf_counter() - start
    sum(range(int(seconds / per_million * 1_000_000)))


@pytest.mark.parametrize("own_process", [False, True], ids=["thread", "own_process"])
def test_replies_wait_for_the_simulations_interpreter_only_when_served_from_its_thread(own_process):
    bus = FeetechBusProcess((1,)) if own_process else FeetechBusEmulator((1,))
    with bus:
        pinger = subprocess.Popen([sys.executable, "-c", PINGER, bus.port], stdout=subprocess.PIPE, text=True)
        assert pinger.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        hold_the_interpreter_lock(0.3)  # LeRobot waits ~34 ms for a reply
        sent, missed = map(int, pinger.stdout.readline().split())
        pinger.wait(timeout=10)
    assert sent > 100
    assert missed == 0 if own_process else missed > 0


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
