"""The Feetech bus emulator: the wire protocol by hand, then LeRobot's unmodified bus and SO-101 driver on it."""

import json
import statistics
import threading
import time

import pytest
import serial
from lerobot.motors import Motor, MotorNormMode
from lerobot.motors.feetech import FeetechMotorsBus
from lerobot.motors.feetech.tables import STS_SMS_SERIES_CONTROL_TABLE
from lerobot.robots import make_robot_from_config
from lerobot.robots.so_follower import SO101FollowerConfig

from tmrl_vla.robots.sim import feetech_emulator
from tmrl_vla.robots.sim.feetech_emulator import REGISTERS, FeetechBusEmulator

pytestmark = pytest.mark.timeout(60)

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
# A calibration as LeRobot's calibrate() would write it, with offsets of both signs (sign-magnitude, bit 11).
CALIBRATION = {
    "shoulder_pan": (1, -120, 800, 3300),
    "shoulder_lift": (2, 540, 900, 3200),
    "elbow_flex": (3, -1500, 850, 3100),
    "wrist_flex": (4, 75, 700, 3300),
    "wrist_roll": (5, -33, 0, 4095),
    "gripper": (6, 1200, 2000, 3400),
}


def frame(*body: int) -> bytes:
    """A protocol-0 packet written out here, independently of the module: FF FF body ~sum(body)."""
    return bytes([0xFF, 0xFF, *body, ~sum(body) & 0xFF])


def eventually(condition, timeout_s: float = 1.0) -> bool:
    """Wait for what a fire-and-forget packet (SYNC_WRITE) does: nothing acknowledges it, on a real bus too."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def connect_with_one_retry(device, bus: FeetechMotorsBus) -> None:
    """``device.connect()``, tried twice: ~120 transactions, each with the SDK's ~50 ms packet timeout.

    On a loaded 2-core host the OS now and then leaves the emulator's thread unscheduled for longer than that
    (about 1 read in 5000 at load 5, measured); a protocol fault would fail both times.
    """
    try:
        device.connect()
    except (ConnectionError, RuntimeError) as error:
        if "Missing motor IDs" not in str(error) and not isinstance(error, ConnectionError):
            raise
        if bus.port_handler.is_open:
            bus.port_handler.closePort()
        device.connect()


@pytest.fixture
def emulator():
    with FeetechBusEmulator() as emu:
        yield emu


@pytest.fixture
def wire(emulator):
    with serial.Serial(emulator.port, baudrate=1_000_000, timeout=0.5) as link:
        yield link


@pytest.fixture
def bus(emulator):
    motors = {f"m{i}": Motor(i, "sts3215", MotorNormMode.DEGREES) for i in range(1, 7)}
    bus = FeetechMotorsBus(emulator.port, motors)
    connect_with_one_retry(bus, bus)
    yield bus
    if bus.is_connected:
        bus.disconnect(disable_torque=False)


def test_register_table_agrees_with_lerobot():
    """Every register the emulator names sits where LeRobot's STS control table says."""
    ours = {name: (addr, size) for name, (addr, size, _) in REGISTERS.items()}
    for name, spec in ours.items():
        assert STS_SMS_SERIES_CONTROL_TABLE[name] == spec, name
    missing = set(STS_SMS_SERIES_CONTROL_TABLE) - set(ours)
    assert missing <= {"Moving_Velocity", "Acceleration_Multiplier "}  # an alias, and a name with a space


def test_ping_and_read_are_answered_with_correct_checksums(emulator, wire):
    wire.write(frame(1, 2, 0x01))
    assert wire.read(6) == bytes([0xFF, 0xFF, 1, 2, 0, 0xFC])
    wire.write(frame(3, 4, 0x02, 3, 2))  # READ Model_Number of motor 3
    assert wire.read(8) == frame(3, 4, 0, 0x09, 0x03)  # 777 = 0x0309, little-endian
    wire.write(frame(0xFE, 2, 0x01))  # broadcast ping: every motor answers, in id order
    assert wire.read(36) == b"".join(frame(i, 2, 0) for i in range(1, 7))
    stats = emulator.stats
    assert stats.packets == 3 and stats.checksum_errors == 0
    assert stats.by_instruction == {"PING": 2, "READ": 1}


def test_corrupt_junk_and_split_packets(emulator, wire, monkeypatch):
    wire.timeout = 0.1
    bad = bytearray(frame(1, 2, 0x01))
    bad[-1] ^= 0x55
    wire.write(bytes(bad))
    assert wire.read(6) == b""  # ignored...
    assert emulator.stats.checksum_errors == 1  # ...and counted
    wire.write(b"\x00\x13\xff" + frame(2, 2, 0x01))  # junk before a header
    assert wire.read(6) == frame(2, 2, 0)
    read = frame(4, 4, 0x02, 56, 2)
    monkeypatch.setattr(feetech_emulator, "STALE_PARTIAL_S", 1.0)  # a descheduled test must not look like a loss
    wire.write(read[:3])  # a packet in two writes
    time.sleep(0.002)
    wire.write(read[3:])
    assert wire.read(8) == frame(4, 4, 0, 0x00, 0x08)  # Present_Position 2048
    monkeypatch.setattr(feetech_emulator, "STALE_PARTIAL_S", 0.02)
    wire.write(b"\xff\xff\x01\x0a\x02")  # a packet cut short: it goes stale and is dropped
    time.sleep(0.2)
    wire.write(frame(5, 2, 0x01))
    assert wire.read(6) == frame(5, 2, 0)
    stats = emulator.stats
    assert stats.checksum_errors == 1 and stats.malformed == 1 and stats.junk_bytes >= 2


def test_write_reg_write_action_and_sync_write_on_the_wire(emulator, wire):
    wire.write(frame(2, 5, 0x03, 42, 0x34, 0x12))  # WRITE Goal_Position = 0x1234
    assert wire.read(6) == frame(2, 2, 0)
    assert emulator.read_register(2, "Goal_Position") == 0x1234
    wire.write(frame(3, 4, 0x04, 40, 1))  # REG_WRITE Torque_Enable: held until ACTION
    assert wire.read(6) == frame(3, 2, 0)
    assert not emulator.torque_enabled(3)
    wire.write(frame(0xFE, 2, 0x05))  # broadcast ACTION: no reply
    wire.timeout = 0.05
    assert eventually(lambda: emulator.torque_enabled(3))
    assert wire.read(1) == b""
    wire.write(frame(0xFE, 10, 0x83, 42, 2, 1, 0x10, 0x00, 6, 0xFF, 0x0F))  # SYNC_WRITE Goal_Position
    assert eventually(lambda: emulator.goal_position(1) == 16 and emulator.goal_position(6) == 4095)
    assert wire.read(1) == b""
    wire.write(frame(9, 2, 0x01))  # nobody has id 9: silence
    assert wire.read(1) == b""


def test_lerobot_bus_reads_positions_and_writes_goals_and_torque(emulator, bus):
    for i in range(1, 7):
        emulator.set_present_position(i, 500 * i + 7)
    assert bus.sync_read("Present_Position", normalize=False) == {f"m{i}": 500 * i + 7 for i in range(1, 7)}
    bus.sync_write("Goal_Position", {"m1": 100, "m4": 3999}, normalize=False)
    assert eventually(lambda: emulator.goal_position(1) == 100 and emulator.goal_position(4) == 3999)
    bus.write("Torque_Enable", "m2", 1)
    assert emulator.torque_enabled(2) and not emulator.torque_enabled(3)
    bus.enable_torque()
    assert all(emulator.torque_enabled(i) for i in range(1, 7))
    bus.disable_torque()
    assert not any(emulator.torque_enabled(i) for i in range(1, 7))
    assert all(emulator.read_register(i, "Lock") == 0 for i in range(1, 7))


def test_homing_offset_follows_lerobots_sign_convention(emulator, bus):
    """``set_half_turn_homings`` assumes Present = Actual - Offset: after it every motor reads 2047."""
    shafts = {1: 3000, 2: 1000, 3: 2047, 4: 4000, 5: 10, 6: 2600}
    for i, ticks in shafts.items():
        emulator.set_present_position(i, ticks)
    offsets = bus.set_half_turn_homings()
    assert offsets == {f"m{i}": ticks - 2047 for i, ticks in shafts.items()}
    assert {i: emulator.homing_offset(i) for i in shafts} == {i: t - 2047 for i, t in shafts.items()}
    assert emulator.read_register(2, "Homing_Offset") == 0x800 | 1047  # negative: sign-magnitude, bit 11
    assert set(bus.sync_read("Present_Position", normalize=False).values()) == {2047}
    bus.write("Goal_Position", "m2", 2147, normalize=False)  # 100 ticks past the middle, in the driver's frame
    assert emulator.goal_position(2) == 2147 and emulator.physical_goal_position(2) == 1100


def test_setup_motor_finds_a_lone_factory_motor_and_sets_its_id():
    """LeRobot's motor setup: broadcast ping, torque off, then ID and baud rate writes to the new id."""
    with FeetechBusEmulator(motor_ids=(1,)) as emu:
        bus = FeetechMotorsBus(emu.port, {"gripper": Motor(6, "sts3215", MotorNormMode.RANGE_0_100)})
        bus.setup_motor("gripper")
        bus.port_handler.closePort()
        assert emu.motor_ids == (6,) and emu.read_register(6, "ID") == 6


def write_calibration_file(tmp_path) -> None:
    entries = {
        name: {"id": i, "drive_mode": 0, "homing_offset": off, "range_min": lo, "range_max": hi}
        for name, (i, off, lo, hi) in CALIBRATION.items()
    }
    (tmp_path / "sim_arm.json").write_text(json.dumps(entries, indent=4))


def degrees(ticks: float, lo: int, hi: int) -> float:
    return (ticks - (lo + hi) / 2) * 360 / 4095


@pytest.mark.parametrize("registers_match_file", [True, False], ids=["calibrated-arm", "fresh-arm"])
def test_so101_follower_on_the_emulator(tmp_path, monkeypatch, registers_match_file):
    prompts = []

    def fake_input(prompt=""):
        prompts.append(prompt)
        if registers_match_file or not prompt.startswith("Press ENTER to use provided calibration file"):
            raise AssertionError(f"unexpected prompt: {prompt!r}")
        return ""  # use the file: LeRobot writes it to the motors

    monkeypatch.setattr("builtins.input", fake_input)
    write_calibration_file(tmp_path)
    with FeetechBusEmulator() as emu:
        if registers_match_file:  # an arm calibrated before: the file matches what its EPROM holds
            for i, off, lo, hi in CALIBRATION.values():
                emu.write_register(i, "Homing_Offset", off)
                emu.write_register(i, "Min_Position_Limit", lo)
                emu.write_register(i, "Max_Position_Limit", hi)
        reported = {"shoulder_pan": 2000, "shoulder_lift": 1500, "elbow_flex": 2900}
        reported |= {"wrist_flex": 1000, "wrist_roll": 4000, "gripper": 2500}
        for name, (i, off, _, _) in CALIBRATION.items():
            emu.set_present_position(i, reported[name] + off)

        config = SO101FollowerConfig(port=emu.port, id="sim_arm", calibration_dir=tmp_path, use_degrees=True)
        robot = make_robot_from_config(config)
        try:
            connect_with_one_retry(robot, robot.bus)
            assert bool(prompts) != registers_match_file  # a prompt only when the motors disagree with the file
            assert {i: emu.homing_offset(i) for i, *_ in CALIBRATION.values()} == {
                i: off for i, off, _, _ in CALIBRATION.values()
            }
            assert all(emu.torque_enabled(i) for i in range(1, 7))  # configure() ends with torque on...
            for name, (i, *_) in CALIBRATION.items():  # ...and the arm holds where it is
                assert emu.goal_position(i) == reported[name], name
            assert emu.read_register(1, "P_Coefficient") == 16 and emu.read_register(6, "Max_Torque_Limit") == 500

            obs = robot.get_observation()
            for name, (_, _, lo, hi) in CALIBRATION.items():
                want = (reported[name] - lo) / (hi - lo) * 100 if name == "gripper" else degrees(reported[name], lo, hi)
                assert obs[f"{name}.pos"] == pytest.approx(want, abs=1e-9), name

            action = {"shoulder_pan.pos": 10.0, "shoulder_lift.pos": -20.0, "elbow_flex.pos": 35.5}
            action |= {"wrist_flex.pos": 0.0, "wrist_roll.pos": -170.0, "gripper.pos": 40.0}
            robot.send_action(action)
            assert eventually(lambda: emu.stats.by_instruction["SYNC_WRITE"] == 1)
            for name, (i, off, lo, hi) in CALIBRATION.items():
                value = action[f"{name}.pos"]
                want = (
                    int(value / 100 * (hi - lo) + lo) if name == "gripper" else int(value * 4095 / 360 + (lo + hi) / 2)
                )
                assert emu.goal_position(i) == want, name
                assert emu.physical_goal_position(i) == (want + off) % 4096, name
        finally:
            if robot.is_connected:
                robot.disconnect()  # the torque-safe exit: every motor limp
        assert not any(emu.torque_enabled(i) for i in range(1, 7))
        assert not robot.is_connected


def test_unplugged_arm_makes_reads_fail_and_recovers(emulator, bus):
    emulator.set_present_position(3, 1234)
    emulator.disconnected = True
    with pytest.raises(ConnectionError):
        bus.sync_read("Present_Position", num_retry=2)
    with pytest.raises(ConnectionError):
        bus.read("Torque_Enable", "m1")
    bus.sync_write("Goal_Position", {"m1": 1000}, normalize=False)  # no reply expected, so no error: lost
    assert eventually(lambda: emulator.stats.ignored_while_disconnected == 5)  # 3 sync reads, a read, a write
    assert emulator.goal_position(1) != 1000
    emulator.disconnected = False
    assert bus.sync_read("Present_Position", normalize=False)["m3"] == 1234
    bus.disconnect()  # disable_torque goes through again
    assert not any(emulator.torque_enabled(i) for i in range(1, 7))


def test_sync_read_round_trip_with_a_simulation_thread_writing(emulator, bus):
    """The driver's read stays fast while a 250 Hz simulation thread moves the motors.

    Typically ~0.1-0.2 ms; on an overloaded machine a few reads exceed the SDK's ~50 ms packet timeout (the
    OS did not run the emulator's thread in time), hence the retries SO101Follower also uses.
    """
    stop = threading.Event()

    def simulate():
        tick = 0
        while not stop.is_set():
            for i in range(1, 7):
                emulator.set_present_position(i, tick % 4096)
                _ = emulator.goal_position(i), emulator.torque_enabled(i)
            tick += 1
            time.sleep(0.004)

    sim = threading.Thread(target=simulate, daemon=True)
    sim.start()
    try:
        times = []
        for _ in range(200):
            start = time.perf_counter()
            values = bus.sync_read("Present_Position", normalize=False, num_retry=2)  # as SO101Follower reads
            times.append(time.perf_counter() - start)
            assert len(values) == 6 and all(0 <= v < 4096 for v in values.values())
    finally:
        stop.set()
        sim.join()
    median_ms = statistics.median(times) * 1e3
    print(f"sync_read of 6 motors: median {median_ms:.2f} ms, max {max(times) * 1e3:.2f} ms")
    assert median_ms < 10
    assert emulator.stats.checksum_errors == 0 and emulator.stats.malformed == 0


def test_lifecycle_is_idempotent():
    emu = FeetechBusEmulator(motor_ids=(3,))
    with pytest.raises(RuntimeError):
        _ = emu.port
    port = emu.start()
    assert emu.start() == port == emu.port
    emu.stop()
    emu.stop()
    with pytest.raises(RuntimeError):
        _ = emu.port
    with pytest.raises(KeyError):
        emu.goal_position(1)
