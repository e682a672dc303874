"""The emulated Feetech bus, served from a process of its own for LeRobot command lines.

Why: LeRobot's servo SDK gives each reply about 34 ms, and the reads of its connect (the handshake's
pings, the calibration reads) are not retried, so one late reply fails a whole ``lerobot-record``.
Served from a thread of the simulation's process, a reply also waits for that process's interpreter
lock, which the physics, scene and camera threads take in turns; on a loaded CPU a thread holding
it can be descheduled, and the reply then waits with it. Here the servos answer from a small
process that does nothing else. It shares with the simulation only what a motor shares with the
world: the shaft's position goes in, the goal and the torque come out, through a memory-mapped
file of three int32 per motor, exchanged each time the bus has packets to answer (before it answers
them and after).

:class:`FeetechBusProcess` stands in for :class:`~tmrl_vla.robots.sim.feetech_emulator.FeetechBusEmulator`
in the simulation with the methods a simulation uses: registers are written before :meth:`start`
(the calibration the servos hold), positions are published at any time, goals and torque read at
any time. The process ends with :meth:`stop`, or by itself when this process dies (its stdin closes).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from tmrl_vla.robots.sim.feetech_emulator import FeetechBusEmulator

FIELDS = 3  # per motor, in the shared file: present (physical ticks), physical goal, torque on


def state_bytes(n_motors: int) -> int:
    """The shared file's size: FIELDS int32 per motor."""
    return 4 * FIELDS * n_motors


class FeetechBusProcess:
    """``start()`` -> the pty's path; LeRobot opens it from its own process."""

    def __init__(
        self, motor_ids: Sequence[int] = (1, 2, 3, 4, 5, 6), model: str = "sts3215", start_timeout_s: float = 60.0
    ) -> None:
        if len(set(motor_ids)) != len(motor_ids):
            raise ValueError(f"motor ids must be distinct, got {list(motor_ids)}")
        self.motor_ids = tuple(motor_ids)
        self.model = model
        self.start_timeout_s = start_timeout_s
        self._slot = {motor_id: i for i, motor_id in enumerate(self.motor_ids)}
        self._writes: list[tuple[int, str | int, int]] = []
        fd, self._state_path = tempfile.mkstemp(prefix="feetech-bus-", suffix=".state")
        os.ftruncate(fd, state_bytes(len(self.motor_ids)))
        self._map = mmap.mmap(fd, state_bytes(len(self.motor_ids)))
        os.close(fd)
        self._state = memoryview(self._map).cast("i")
        self._child: subprocess.Popen | None = None
        self._port: str | None = None

    # -- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> str:
        if self._port is not None:
            return self._port
        command = [sys.executable, "-m", __name__, f"--state={self._state_path}", f"--model={self.model}"]
        command += [f"--ids={','.join(map(str, self.motor_ids))}", f"--writes={json.dumps(self._writes)}"]
        self._child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + self.start_timeout_s
        line = ""
        while time.monotonic() < deadline and not line:
            ready, _, _ = select.select([self._child.stdout], [], [], 0.1)
            if ready:
                line = self._child.stdout.readline() or "(exited)"
            elif self._child.poll() is not None:
                line = "(exited)"
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"the servo bus process did not start: {line.strip() or 'no answer'}")
        self._port = line.split(maxsplit=1)[1].strip()
        return self._port

    @property
    def port(self) -> str:
        if self._port is None:
            raise RuntimeError("the bus process is not started: call start() first")
        return self._port

    def stop(self) -> None:
        """End the process (it stops its emulator first) and free the shared file; safe to call twice."""
        if self._child is not None:
            self._child.stdin.close()  # its signal to stop
            try:
                self._child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
            self._child.stdout.close()
            self._child, self._port = None, None
        if self._map is not None:
            self._state.release()
            self._map.close()
            os.unlink(self._state_path)
            self._map = None

    def __enter__(self) -> FeetechBusProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the simulation's side --------------------------------------------------------------------------

    def write_register(self, motor_id: int, name_or_address: str | int, value: int) -> None:
        """Before :meth:`start` only: what the servos hold when LeRobot first talks to them."""
        if self._child is not None:
            raise RuntimeError("registers of a bus process are written before start(): it owns them after")
        if motor_id not in self._slot:
            raise KeyError(f"no motor with id {motor_id} on this bus (ids: {list(self.motor_ids)})")
        self._writes.append((motor_id, name_or_address, int(value)))

    def set_present_position(self, motor_id: int, raw_ticks: int) -> None:
        self._state[FIELDS * self._slot[motor_id]] = int(raw_ticks)

    def physical_goal_position(self, motor_id: int) -> int:
        return self._state[FIELDS * self._slot[motor_id] + 1]

    def torque_enabled(self, motor_id: int) -> bool:
        return self._state[FIELDS * self._slot[motor_id] + 2] != 0


def serve(state_path: str, motor_ids: list[int], model: str, writes: list) -> None:
    """The child: an emulator whose traffic exchanges state through ``state_path``, until stdin closes."""
    slot = {motor_id: i for i, motor_id in enumerate(motor_ids)}
    with open(state_path, "r+b") as file:
        shared = mmap.mmap(file.fileno(), state_bytes(len(motor_ids)))
    state = memoryview(shared).cast("i")
    bus = FeetechBusEmulator(motor_ids, model)

    def exchange() -> None:
        for motor_id in bus.motor_ids:  # a motor given another id (a written ID register) leaves the simulation
            if motor_id in slot:
                i = FIELDS * slot[motor_id]
                bus.set_present_position(motor_id, state[i])
                state[i + 1] = bus.physical_goal_position(motor_id)
                state[i + 2] = int(bus.torque_enabled(motor_id))

    for motor_id, register, value in writes:
        bus.write_register(motor_id, register, value)
    exchange()
    bus.on_traffic = exchange
    print(f"PORT {bus.start()}", flush=True)
    try:
        sys.stdin.read()  # returns when the simulation stops this process, or dies
    finally:
        bus.stop()
        state.release()
        shared.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", required=True, help="the shared file of FIELDS int32 per motor")
    parser.add_argument("--ids", required=True, help="comma-separated motor ids, in the shared file's order")
    parser.add_argument("--model", default="sts3215")
    parser.add_argument("--writes", default="[]", help="JSON [[id, register, value], ...] written before serving")
    args = parser.parse_args(argv)
    serve(args.state, [int(i) for i in args.ids.split(",")], args.model, json.loads(args.writes))


if __name__ == "__main__":
    main()
