"""The person beside the robot: resets the scene between episodes and says how each one ended.

On a real arm nothing else knows whether the cube was picked, so a person labels each episode
from the keyboard, and every second they spend is the cost this library tries to cut; it is timed
and logged per episode. :class:`KeyboardPerson` reads single keys from the terminal (no display
needed, unlike ``pynput``, which LeRobot's keyboard teleoperator uses and which needs an X server);
:class:`SimulatedPerson` stands in for the person on a simulated arm, reading success from the
simulation, so the same loop runs unattended in tests.

Keys (also printed when a :class:`KeyboardPerson` starts)::

    s  success: the task is done (ends the episode)     f  failure: end the episode now
    e  e-stop: hold the arm (again: release)            q  stop after this episode
    i  take the arm over with the teleoperator (again: hand it back to the policy)
    Enter  the scene is reset, start the next episode
"""

from __future__ import annotations

import os
import queue
import select
import sys
import termios
import threading
import time
import tty
from typing import Protocol, TextIO

SUCCESS, FAILURE, ESTOP, QUIT, READY = "success", "failure", "estop", "quit", "ready"
INTERVENE = "intervene"
KEYS = {"s": SUCCESS, "f": FAILURE, "e": ESTOP, "q": QUIT, "i": INTERVENE, "\n": READY, "\r": READY}
HELP = (
    "keys: [s] success  [f] failure (end the episode)  [e] e-stop on/off  [i] take over / hand back (teleoperator)  "
    "[q] stop after this episode  [Enter] scene reset, start"
)


class Person(Protocol):
    def reset_scene(self, episode: int) -> float:
        """Block until the scene is ready for ``episode``; return the seconds the person spent."""

    def poll(self) -> set[str]:
        """The events (``SUCCESS``, ``FAILURE``, ``ESTOP``, ``QUIT``) since the last poll."""

    def say(self, text: str) -> None:
        """Tell the person something (an episode's end, the e-stop's state)."""


class SimulatedPerson:
    """Resets the simulated scene at once and reports success when the simulation says so.

    ``intervene_every``: in every such episode (the last of each group of that many; 0: never) the
    person takes the arm over after ``intervene_after`` ticks, by pressing the take-over key, and
    keeps it to the end of the episode (the teleoperator finishes the task)."""

    def __init__(self, simulation, seed: int = 0, *, intervene_every: int = 0, intervene_after: int = 20) -> None:
        self.simulation, self.seed = simulation, seed
        self.intervene_every, self.intervene_after = intervene_every, intervene_after
        self.said: list[str] = []  # what the env told the person
        self._episode, self._polls = -1, 0

    def reset_scene(self, episode: int) -> float:
        self.simulation.reset_scene(self.seed + episode)
        self._episode, self._polls = episode, -1  # the env polls once right after the reset
        return 0.0

    def poll(self) -> set[str]:
        events = {SUCCESS} if self.simulation.success() else set()
        self._polls += 1
        n = self.intervene_every
        if n and self._episode % n == n - 1 and self._polls == self.intervene_after:
            events.add(INTERVENE)
        return events

    def say(self, text: str) -> None:
        self.said.append(text)


class KeyboardPerson:
    """Single keys from a terminal (``stream``, default stdin), read by a thread in cbreak mode."""

    def __init__(self, stream: TextIO | None = None, out: TextIO | None = None) -> None:
        self.stream = stream or sys.stdin
        self.out = out or sys.stderr
        self.events: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._saved_mode = None
        fd = self.stream.fileno()
        if os.isatty(fd):  # keys without Enter; restored by close()
            self._saved_mode = termios.tcgetattr(fd)
            tty.setcbreak(fd)
        self._thread = threading.Thread(target=self._read, name="keyboard", daemon=True)
        self._thread.start()
        self.say(HELP)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _read(self) -> None:
        fd = self.stream.fileno()
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            key = os.read(fd, 1).decode(errors="ignore").lower()
            if not key:  # end of input
                return
            if key in KEYS:
                self.events.put(KEYS[key])

    def reset_scene(self, episode: int) -> float:
        self._drain()  # keys pressed during the homing motion do not count for the next episode
        self.say(f"episode {episode}: reset the scene, then press Enter")
        start = time.monotonic()
        while True:
            event = self.events.get()
            if event == READY:
                return time.monotonic() - start
            if event == QUIT:
                self.events.put(QUIT)  # seen by the next poll, after the person's reset
                return time.monotonic() - start

    def poll(self) -> set[str]:
        found = set()
        while not self.events.empty():
            event = self.events.get_nowait()
            if event != READY:
                found.add(event)
        return found

    def _drain(self) -> None:
        while not self.events.empty():
            self.events.get_nowait()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        if self._saved_mode is not None:
            termios.tcsetattr(self.stream.fileno(), termios.TCSADRAIN, self._saved_mode)
            self._saved_mode = None
