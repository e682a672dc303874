"""A Feetech STS3215 servo bus on a pseudo-terminal, for LeRobot's unmodified drivers.

Why: LeRobot's ``FeetechMotorsBus`` (and ``so101_follower`` on top of it) only speaks Feetech protocol 0
over a serial port. To run those drivers against a simulation, and to test their connect, calibration,
torque-off-on-exit and unplugged-arm paths without hardware, :class:`FeetechBusEmulator` opens a pty and
answers on its master side; the slave path (:attr:`~FeetechBusEmulator.port`) is what LeRobot opens as it
would ``/dev/ttyACM0``.

The wire format is the SDK's protocol 0: ``FF FF ID LEN INSTR PARAMS.. CHK`` with
``CHK = ~(ID + LEN + INSTR + PARAMS) & 0xFF``; status packets are ``FF FF ID LEN ERR PARAMS.. CHK``.
Multi-byte registers are little-endian (the SDK's ``SCS_END = 0``, which ``PacketHandler(0)`` sets).

Instructions: PING (to one id; to the broadcast id 0xFE every motor answers, in id order, which is what
LeRobot's ``broadcast_ping`` collects), READ, WRITE, REG_WRITE and ACTION, SYNC_READ (one status packet
per listed motor, in the listed order) and SYNC_WRITE (no reply). Other broadcast packets get no reply,
and ``Response_Status_Level = 0`` silences the replies to WRITE / REG_WRITE / ACTION, as on a servo.
Packets with a bad checksum or length are ignored and counted; the parser resynchronises on ``FF FF`` and
drops a partial packet that stays incomplete for :data:`STALE_PARTIAL_S`.

Registers: 256 bytes per motor at the STS3215 addresses (named as in LeRobot's control table), with
plausible factory values (model number 777, firmware 3.10, limits 0..4095, offset 0, torque off,
position mode, present position 2048). They are plain bytes: sign-magnitude encodings (``Homing_Offset``
bit 11, ``Goal_Position`` / ``Present_Position`` bit 15) are the driver's business. Of a real servo's
logic the emulator keeps what LeRobot relies on: the reported ``Present_Position`` is
``(physical - Homing_Offset) mod 4096`` (``FeetechMotorsBus._get_half_turn_homings`` assumes exactly this,
and LeRobot clears Phase bit 4 so positions stay in 0..4095); turning torque on sets the goal to the present
position, so the arm holds where it is (LeRobot enables torque at connect without writing a goal); a write to
``ID`` re-addresses the motor; the model/firmware bytes and the ``Present_*`` status block are read-only from
the bus.

Not emulated: motion (the simulation sets positions with :meth:`FeetechBusEmulator.set_present_position`
and reads :meth:`FeetechBusEmulator.physical_goal_position` / :meth:`FeetechBusEmulator.torque_enabled`), the
Lock / EPROM persistence, baud rates (a pty has none; every rate works), Return_Delay_Time (see
``reply_delay_s``), error bits (always 0), torque/current limits, velocity/PWM/step modes, and Torque_Enable
128 (the STS "set this position as the middle" command).
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

BROADCAST_ID = 0xFE
TABLE_SIZE = 256
MAX_PACKET_LEN = 250  # the SDK's TXPACKET_MAX_LEN: LEN above this is noise
STALE_PARTIAL_S = 0.02  # a partial packet with no new byte for this long is dropped (a lost byte)

INSTRUCTIONS = {0x01: "PING", 0x02: "READ", 0x03: "WRITE", 0x04: "REG_WRITE", 0x05: "ACTION"}
INSTRUCTIONS |= {0x82: "SYNC_READ", 0x83: "SYNC_WRITE"}
_PING, _READ, _WRITE, _REG_WRITE, _ACTION, _SYNC_READ, _SYNC_WRITE = 0x01, 0x02, 0x03, 0x04, 0x05, 0x82, 0x83

MODEL_NUMBERS = {"sts3215": 777, "sts3250": 2825}  # both use the STS control table and a 4096-tick turn
RESOLUTION = 4096

# name: (address, size, factory value). Names and addresses are those of LeRobot's STS/SMS control table
# (a test checks they agree); the values are plausible STS3215 defaults, not a particular unit's dump.
REGISTERS: dict[str, tuple[int, int, int]] = {
    "Firmware_Major_Version": (0, 1, 3),
    "Firmware_Minor_Version": (1, 1, 10),
    "Model_Number": (3, 2, 777),
    "ID": (5, 1, 1),
    "Baud_Rate": (6, 1, 0),  # 0 = 1 Mbps
    "Return_Delay_Time": (7, 1, 0),
    "Response_Status_Level": (8, 1, 1),
    "Min_Position_Limit": (9, 2, 0),
    "Max_Position_Limit": (11, 2, 4095),
    "Max_Temperature_Limit": (13, 1, 70),
    "Max_Voltage_Limit": (14, 1, 140),
    "Min_Voltage_Limit": (15, 1, 40),
    "Max_Torque_Limit": (16, 2, 1000),
    "Phase": (18, 1, 12),
    "Unloading_Condition": (19, 1, 44),
    "LED_Alarm_Condition": (20, 1, 47),
    "P_Coefficient": (21, 1, 32),
    "D_Coefficient": (22, 1, 32),
    "I_Coefficient": (23, 1, 0),
    "Minimum_Startup_Force": (24, 2, 16),
    "CW_Dead_Zone": (26, 1, 1),
    "CCW_Dead_Zone": (27, 1, 1),
    "Protection_Current": (28, 2, 500),
    "Angular_Resolution": (30, 1, 1),
    "Homing_Offset": (31, 2, 0),
    "Operating_Mode": (33, 1, 0),
    "Protective_Torque": (34, 1, 20),
    "Protection_Time": (35, 1, 200),
    "Overload_Torque": (36, 1, 80),
    "Velocity_closed_loop_P_proportional_coefficient": (37, 1, 10),
    "Over_Current_Protection_Time": (38, 1, 200),
    "Velocity_closed_loop_I_integral_coefficient": (39, 1, 200),
    "Torque_Enable": (40, 1, 0),
    "Acceleration": (41, 1, 0),
    "Goal_Position": (42, 2, 2048),
    "Goal_Time": (44, 2, 0),
    "Goal_Velocity": (46, 2, 0),
    "Torque_Limit": (48, 2, 1000),
    "Lock": (55, 1, 0),
    "Present_Position": (56, 2, 2048),
    "Present_Velocity": (58, 2, 0),
    "Present_Load": (60, 2, 0),
    "Present_Voltage": (62, 1, 120),  # 12.0 V
    "Present_Temperature": (63, 1, 30),
    "Status": (65, 1, 0),
    "Moving": (66, 1, 0),
    "Present_Current": (69, 2, 0),
    "Goal_Position_2": (71, 2, 2048),
    "Moving_Velocity_Threshold": (80, 1, 40),
    "DTs": (81, 1, 32),
    "Velocity_Unit_factor": (82, 1, 50),
    "Hts": (83, 1, 0),
    "Maximum_Velocity_Limit": (84, 1, 254),
    "Maximum_Acceleration": (85, 1, 0),
}
SIGN_BITS = {"Homing_Offset": 11, "Goal_Position": 15, "Goal_Velocity": 15, "Present_Position": 15}
# Bytes the bus cannot write: firmware/model (0..4) and the status block (56..72).
READ_ONLY = frozenset(range(0, 5)) | frozenset(range(56, 73))
_ADDR = {name: (addr, size) for name, (addr, size, _) in REGISTERS.items()}


def _encode_sign_magnitude(value: int, bit: int) -> int:
    if abs(value) >= 1 << bit:
        raise ValueError(f"{value} does not fit a sign-magnitude field with the sign at bit {bit}")
    return (1 << bit) | -value if value < 0 else value


def _decode_sign_magnitude(raw: int, bit: int) -> int:
    magnitude = raw & ((1 << bit) - 1)
    return -magnitude if raw >> bit & 1 else magnitude


def packet(motor_id: int, code: int, params: bytes | Sequence[int] = b"") -> bytes:
    """One protocol-0 packet (``code`` is the instruction, or the error byte of a status packet)."""
    body = bytes([motor_id, len(params) + 2, code, *params])
    return b"\xff\xff" + body + bytes([~sum(body) & 0xFF])


@dataclass
class EmulatorStats:
    """What the emulator saw on the wire, for tests and for diagnosing a flaky link."""

    packets: int = 0  # well-formed instruction packets, whoever they were for
    replies: int = 0  # status packets sent
    checksum_errors: int = 0
    malformed: int = 0  # impossible LEN, or a partial packet that went stale
    junk_bytes: int = 0  # bytes skipped while looking for FF FF
    ignored_while_disconnected: int = 0
    unknown_instructions: int = 0
    tx_dropped_bytes: int = 0  # reply bytes nobody read (the pty buffer stayed full)
    by_instruction: Counter[str] = field(default_factory=Counter)


class PacketRecord(NamedTuple):
    """A received instruction packet (``params`` exclude ID, LEN, INSTR and the checksum)."""

    time: float
    motor_id: int
    instruction: str
    params: bytes


@dataclass
class _Motor:
    regs: bytearray
    physical: int  # the shaft's position in ticks, before the homing offset
    pending: tuple[int, bytes] | None = None  # a REG_WRITE waiting for ACTION


class FeetechBusEmulator:
    """Feetech servos on a pty: LeRobot's driver on one side, a simulation (or a test) on the other.

    ``with FeetechBusEmulator() as bus: FeetechMotorsBus(port=bus.port, ...)``. The serving thread and the
    simulation's calls share one lock around the registers, so the simulation may call
    :meth:`goal_position` / :meth:`set_present_position` from its own thread at any rate.

    ``reply_delay_s`` delays every reply (a slow bus). LeRobot's SDK gives a reply ~50 ms; a longer delay makes
    its reads time out, and the late replies then sit in the port and answer its next reads, as on hardware.
    A reply takes ~0.1-0.2 ms typically; on an overloaded host the OS sometimes leaves the serving thread
    unscheduled past that 50 ms (measured: ~1 sync read in 5000 at load 5 on 2 cores).
    Stop the emulator after the driver has disconnected: a closed pty makes the driver's reads raise.
    """

    def __init__(
        self,
        motor_ids: Sequence[int] = (1, 2, 3, 4, 5, 6),
        model: str = "sts3215",
        *,
        reply_delay_s: float = 0.0,
    ) -> None:
        if model not in MODEL_NUMBERS:
            raise ValueError(f"model {model!r} is not emulated; known: {sorted(MODEL_NUMBERS)}")
        if len(set(motor_ids)) != len(motor_ids) or not all(0 <= i < BROADCAST_ID for i in motor_ids):
            raise ValueError(f"motor ids must be distinct and in 0..253, got {list(motor_ids)}")
        self.model = model
        self.reply_delay_s = reply_delay_s
        # called by the serving thread before and after it answers what it read (no lock held): a bus
        # served from another process exchanges its state with the simulation there (bus_process.py)
        self.on_traffic: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._motors = {i: self._factory_motor(i) for i in motor_ids}
        self._stats = EmulatorStats()
        self._log: deque[PacketRecord] = deque(maxlen=4096)
        self._disconnected = False
        self._thread: threading.Thread | None = None
        self._fds: tuple[int, int, int, int] | None = None  # master, slave, wake pipe read, wake pipe write
        self._port: str | None = None

    def _factory_motor(self, motor_id: int) -> _Motor:
        regs = bytearray(TABLE_SIZE)
        for addr, size, value in REGISTERS.values():
            regs[addr : addr + size] = value.to_bytes(size, "little")
        regs[3:5] = MODEL_NUMBERS[self.model].to_bytes(2, "little")
        regs[5] = motor_id
        return _Motor(regs, physical=REGISTERS["Present_Position"][2])

    # -- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> str:
        """Open the pty and serve it from a daemon thread; returns the port path to give LeRobot."""
        if self._port is not None:
            return self._port
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: bytes pass as they are
        os.set_blocking(master, False)  # a reply nobody reads must not block the thread (and stop())
        wake_r, wake_w = os.pipe()
        self._fds = (master, slave, wake_r, wake_w)  # the slave stays open here so the master never sees EIO
        self._port = os.ttyname(slave)
        self._thread = threading.Thread(target=self._serve, name=f"feetech-emulator {self._port}", daemon=True)
        self._thread.start()
        return self._port

    @property
    def port(self) -> str:
        if self._port is None:
            raise RuntimeError("the emulator is not started: call start() first")
        return self._port

    def stop(self) -> None:
        """Stop serving and close the pty; safe to call twice."""
        if self._fds is None:
            return
        os.write(self._fds[3], b"x")
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        for fd in self._fds:
            os.close(fd)
        self._fds, self._thread, self._port = None, None, None

    def __enter__(self) -> FeetechBusEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the simulation's side --------------------------------------------------------------------------

    @property
    def motor_ids(self) -> tuple[int, ...]:
        with self._lock:
            return tuple(sorted(self._motors))

    @property
    def disconnected(self) -> bool:
        """When True the bus is silent (an unplugged arm): packets are read, counted and dropped."""
        return self._disconnected

    @disconnected.setter
    def disconnected(self, value: bool) -> None:
        self._disconnected = bool(value)

    def goal_position(self, motor_id: int) -> int:
        """``Goal_Position`` as the driver wrote it (ticks in the driver's frame, i.e. after the offset)."""
        return self.read_register(motor_id, "Goal_Position", signed=True)

    def physical_goal_position(self, motor_id: int) -> int:
        """Where the shaft is sent: the goal clamped to the position limits, plus the homing offset, mod 4096.

        This is the counterpart of :meth:`set_present_position` (both physical); with a zero offset and the
        full 0..4095 range it equals :meth:`goal_position`. Min = Max = 0 means no limits, as on the STS.
        """
        with self._lock:
            regs = self._motor(motor_id).regs
            goal = _decode_sign_magnitude(self._word(regs, "Goal_Position"), 15)
            lo, hi = self._word(regs, "Min_Position_Limit"), self._word(regs, "Max_Position_Limit")
            if lo or hi:
                goal = min(max(goal, lo), hi)
            return (goal + _decode_sign_magnitude(self._word(regs, "Homing_Offset"), 11)) % RESOLUTION

    def homing_offset(self, motor_id: int) -> int:
        return self.read_register(motor_id, "Homing_Offset", signed=True)

    def torque_enabled(self, motor_id: int) -> bool:
        return self.read_register(motor_id, "Torque_Enable") != 0

    def set_present_position(self, motor_id: int, raw_ticks: int) -> None:
        """Set the shaft's physical position (before the homing offset); wraps modulo one turn like the encoder."""
        with self._lock:
            self._motor(motor_id).physical = int(raw_ticks) % RESOLUTION

    def read_register(
        self, motor_id: int, name_or_address: str | int, length: int | None = None, *, signed: bool = False
    ) -> int:
        """A register as an unsigned little-endian int, or sign-magnitude decoded with ``signed=True``.

        ``Present_Position`` reads as the driver would see it (offset applied).
        """
        addr, size = self._resolve(name_or_address, length)
        with self._lock:
            raw = int.from_bytes(self._read_bytes(self._motor(motor_id), addr, size), "little")
        if signed and isinstance(name_or_address, str) and name_or_address in SIGN_BITS:
            return _decode_sign_magnitude(raw, SIGN_BITS[name_or_address])
        return raw

    def write_register(self, motor_id: int, name_or_address: str | int, value: int, length: int | None = None) -> None:
        """Store a register (any address, read-only ones included: this is the simulation's hand).

        A negative value is sign-magnitude encoded for the registers the STS encodes so (``Homing_Offset``,
        ``Goal_Position``, ...), as LeRobot would write it; elsewhere it is an error. ``Present_Position`` is
        recomputed from the physical position on every read: set that with :meth:`set_present_position`.
        """
        addr, size = self._resolve(name_or_address, length)
        value = int(value)
        if value < 0:
            if not (isinstance(name_or_address, str) and name_or_address in SIGN_BITS):
                raise ValueError(f"negative value {value} for {name_or_address!r}, which has no sign bit")
            value = _encode_sign_magnitude(value, SIGN_BITS[name_or_address])
        if value >= 1 << (8 * size):
            raise ValueError(f"{value} does not fit {size} byte(s)")
        with self._lock:
            motor = self._motor(motor_id)
            motor.regs[addr : addr + size] = value.to_bytes(size, "little")
            self._readdress(motor_id, motor)

    @property
    def stats(self) -> EmulatorStats:
        """A snapshot of the counters."""
        with self._lock:
            return replace(self._stats, by_instruction=Counter(self._stats.by_instruction))

    @property
    def packet_log(self) -> list[PacketRecord]:
        """The last 4096 instruction packets received, oldest first."""
        with self._lock:
            return list(self._log)

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = EmulatorStats()
            self._log.clear()

    # -- registers (callers hold the lock) --------------------------------------------------------------

    @staticmethod
    def _resolve(name_or_address: str | int, length: int | None) -> tuple[int, int]:
        if isinstance(name_or_address, str):
            if name_or_address not in _ADDR:
                raise KeyError(f"unknown register {name_or_address!r}")
            addr, size = _ADDR[name_or_address]
            size = size if length is None else length
        else:
            addr, size = int(name_or_address), 1 if length is None else length
        if addr < 0 or size < 1 or addr + size > TABLE_SIZE:
            raise ValueError(f"register span {addr}+{size} is outside the {TABLE_SIZE}-byte table")
        return addr, size

    def _motor(self, motor_id: int) -> _Motor:
        try:
            return self._motors[motor_id]
        except KeyError:
            raise KeyError(f"no motor with id {motor_id} on this bus (ids: {sorted(self._motors)})") from None

    @staticmethod
    def _word(regs: bytearray, name: str) -> int:
        addr, _ = _ADDR[name]
        return regs[addr] | regs[addr + 1] << 8

    def _read_bytes(self, motor: _Motor, addr: int, size: int) -> bytes:
        """The bytes a READ returns, with Present_Position derived from the shaft and the offset first."""
        offset = _decode_sign_magnitude(self._word(motor.regs, "Homing_Offset"), 11)
        present_addr, _ = _ADDR["Present_Position"]
        present = (motor.physical - offset) % RESOLUTION
        motor.regs[present_addr : present_addr + 2] = present.to_bytes(2, "little")
        return bytes(motor.regs[addr : addr + size]).ljust(size, b"\x00")  # past the table: zeros

    def _bus_write(self, motor_id: int, addr: int, data: bytes) -> None:
        """A write from the driver: read-only bytes are left alone, as a servo does.

        Turning torque on makes the goal the present position (unless the same packet sets a goal), so the
        arm holds where it is: LeRobot enables torque at connect without writing a goal first.
        """
        motor = self._motors[motor_id]
        torque_addr, goal_addr = _ADDR["Torque_Enable"][0], _ADDR["Goal_Position"][0]
        torque_was_on = motor.regs[torque_addr] != 0
        for i, byte in enumerate(data):
            if addr + i < TABLE_SIZE and addr + i not in READ_ONLY:
                motor.regs[addr + i] = byte
        if not torque_was_on and motor.regs[torque_addr] and not addr <= goal_addr < addr + len(data):
            motor.regs[goal_addr : goal_addr + 2] = self._read_bytes(motor, _ADDR["Present_Position"][0], 2)
        self._readdress(motor_id, motor)

    def _readdress(self, motor_id: int, motor: _Motor) -> None:
        """A written ID moves the motor to it (refused, and the byte restored, if another motor has it)."""
        new_id = motor.regs[_ADDR["ID"][0]]
        if new_id == motor_id:
            return
        if new_id in self._motors or new_id >= BROADCAST_ID:
            motor.regs[_ADDR["ID"][0]] = motor_id
            return
        self._motors[new_id] = self._motors.pop(motor_id)

    # -- the wire -------------------------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._fds is not None
        master, _, wake_r, _ = self._fds
        buf = bytearray()
        while True:
            timeout = STALE_PARTIAL_S if buf else None
            ready, _, _ = select.select([master, wake_r], [], [], timeout)
            if wake_r in ready:
                return
            if not ready:  # a partial packet went stale: a byte was lost, resynchronise after its header
                with self._lock:
                    self._stats.malformed += 1
                del buf[:2]
            else:
                try:
                    buf += os.read(master, 4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:  # EIO: no slave open right now
                    time.sleep(0.005)
                    continue
            packets = self._split(buf)
            if packets and self.on_traffic is not None:
                self.on_traffic()
            for motor_id, instruction, params in packets:
                reply = self._handle(motor_id, instruction, params)
                if reply:
                    if self.reply_delay_s > 0:
                        time.sleep(self.reply_delay_s)
                    self._send(master, reply)
            if packets and self.on_traffic is not None:
                self.on_traffic()

    def _split(self, buf: bytearray) -> list[tuple[int, int, bytes]]:
        """Take the complete, valid packets off the front of ``buf``; leave a partial one in it."""
        packets = []
        while True:
            start = buf.find(b"\xff\xff")
            if start < 0:
                keep = 1 if buf.endswith(b"\xff") else 0  # may be the first half of a header
                if len(buf) > keep:
                    with self._lock:
                        self._stats.junk_bytes += len(buf) - keep
                    del buf[: len(buf) - keep]
                break
            skipped = start
            del buf[:start]
            if len(buf) >= 3 and buf[2] == 0xFF:  # FF FF FF: the header starts one byte later
                del buf[0]
                skipped += 1
            if skipped:
                with self._lock:
                    self._stats.junk_bytes += skipped
            if len(buf) < 4:
                break
            length = buf[3]
            if not 2 <= length <= MAX_PACKET_LEN:
                with self._lock:
                    self._stats.malformed += 1
                del buf[:2]
                continue
            end = length + 4
            if len(buf) < end:
                break
            body = bytes(buf[2 : end - 1])
            if ~sum(body) & 0xFF != buf[end - 1]:
                with self._lock:
                    self._stats.checksum_errors += 1
                del buf[:2]
                continue
            del buf[:end]
            packets.append((body[0], body[2], body[3:]))
        return packets

    def _send(self, master: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(master, view) :]
            except BlockingIOError:
                _, writable, _ = select.select([], [master], [], 0.05)
                if not writable:
                    with self._lock:
                        self._stats.tx_dropped_bytes += len(view)
                    return

    def _handle(self, motor_id: int, instruction: int, params: bytes) -> bytes:
        """Execute one instruction packet; returns the status packet(s) to send (maybe none)."""
        with self._lock:
            name = INSTRUCTIONS.get(instruction, f"0x{instruction:02X}")
            self._stats.packets += 1
            self._stats.by_instruction[name] += 1
            self._log.append(PacketRecord(time.monotonic(), motor_id, name, params))
            if self._disconnected:
                self._stats.ignored_while_disconnected += 1
                return b""
            replies = self._execute(motor_id, instruction, params)
            self._stats.replies += len(replies)
            return b"".join(replies)

    def _execute(self, motor_id: int, instruction: int, params: bytes) -> list[bytes]:
        broadcast = motor_id == BROADCAST_ID
        if not broadcast and motor_id not in self._motors:
            return []  # nobody with that id on the bus: silence, as on a real bus
        targets = sorted(self._motors) if broadcast else [motor_id]
        if instruction == _PING:
            return [packet(i, 0) for i in targets]
        if instruction == _READ:
            if broadcast or len(params) != 2:
                return []
            return [packet(motor_id, 0, self._read_bytes(self._motors[motor_id], params[0], params[1]))]
        if instruction in (_WRITE, _REG_WRITE, _ACTION):
            if instruction != _ACTION and not params:
                return []
            addressed = None if broadcast else self._motors[motor_id]  # still itself if this writes its ID
            for i in targets:
                motor = self._motors[i]
                if instruction == _WRITE:
                    self._bus_write(i, params[0], params[1:])
                elif instruction == _REG_WRITE:
                    motor.pending = (params[0], params[1:])
                elif motor.pending is not None:
                    pending, motor.pending = motor.pending, None
                    self._bus_write(i, *pending)
            if addressed is None:
                return []
            # Reply under the packet's id, even after an ID write (LeRobot's setup_motor waits for that id).
            return [packet(motor_id, 0)] if addressed.regs[_ADDR["Response_Status_Level"][0]] else []
        if instruction == _SYNC_READ:
            if not broadcast or len(params) < 2:
                return []
            addr, size = params[0], params[1]
            return [
                packet(i, 0, self._read_bytes(self._motors[i], addr, size)) for i in params[2:] if i in self._motors
            ]
        if instruction == _SYNC_WRITE:
            if not broadcast or len(params) < 2:
                return []
            addr, size = params[0], params[1]
            data = params[2:]
            for start in range(0, len(data) - size, size + 1):
                if data[start] in self._motors:
                    self._bus_write(data[start], addr, data[start + 1 : start + 1 + size])
            return []
        self._stats.unknown_instructions += 1
        return []
