"""A fixed-rate control loop in which VLA inference runs beside the arm, not in its way.

A chunking VLA takes longer to decide than one control tick at 30 Hz. Run in the loop, every
decision would freeze the arm for that long; here a worker thread computes the next chunk while
the loop keeps sending the current one. When the queue runs low (``refill_at`` actions left), the
loop hands the worker the newest observation; when the worker's chunk arrives, it replaces what is
left of the old one, less the actions whose time passed while it was computed (the chunk's first
action belongs to the tick of its observation). If the queue ever runs dry, the loop does not wait: the safety layer's
watchdog holds the arm until the next chunk is there. Every command goes through the
:class:`~tmrl_vla.robots.safety.SafetyLayer`.

What it measures (:class:`LoopStats`): when each tick started against its deadline (jitter), how
many ticks started late, and how many had no action to send.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tmrl_vla.robots.safety import SafetyLayer


@dataclass(frozen=True)
class ControlConfig:
    fps: float = 30.0  # control ticks per second
    refill_at: int = 2  # ask for the next chunk when this many actions of the current one are left
    late_after_s: float = 0.005  # a tick that starts this long after its deadline is late


@dataclass
class LoopStats:
    start_delays: list[float] = field(default_factory=list)  # seconds each tick started after its deadline
    empty_ticks: int = 0  # ticks with no action from the policy (the arm was held)
    chunks: int = 0  # chunks the worker delivered
    inference_s: list[float] = field(default_factory=list)  # time of each inference

    def summary(self, late_after_s: float) -> dict:
        delays = np.asarray(self.start_delays)
        return {
            "ticks": int(delays.size),
            "late_fraction": float((delays > late_after_s).mean()) if delays.size else 0.0,
            "start_delay_ms": {
                "median": float(np.median(delays) * 1e3),
                "p95": float(np.percentile(delays, 95) * 1e3),
                "max": float(delays.max() * 1e3),
            }
            if delays.size
            else None,
            "empty_ticks": self.empty_ticks,
            "chunks": self.chunks,
            "inference_ms_median": float(np.median(self.inference_s) * 1e3) if self.inference_s else None,
        }


class _Worker(threading.Thread):
    """Runs ``infer(observation) -> (n, action_dim)`` on requests, one at a time, newest first."""

    def __init__(self, infer: Callable[[Any], np.ndarray]) -> None:
        super().__init__(daemon=True)
        self.infer = infer
        self.requests: queue.Queue = queue.Queue(maxsize=1)
        self.results: queue.Queue = queue.Queue()
        self.error: BaseException | None = None

    def run(self) -> None:
        while True:
            observation = self.requests.get()
            if observation is None:
                return
            try:
                start = time.perf_counter()
                chunk = np.asarray(self.infer(observation))
                self.results.put((chunk, time.perf_counter() - start))
            except BaseException as err:  # surfaced by the loop on its next tick
                self.error = err
                return


class ControlLoop:
    """``read() -> (observation, measured joints, reading time on the safety layer's clock)``,
    ``send(command)``, and ``infer(observation) -> chunk``; :meth:`run` ticks at ``config.fps``."""

    def __init__(
        self,
        read: Callable[[], tuple[Any, np.ndarray, float]],
        send: Callable[[np.ndarray], None],
        infer: Callable[[Any], np.ndarray],
        safety: SafetyLayer,
        config: ControlConfig | None = None,
    ) -> None:
        self.read, self.send, self.safety = read, send, safety
        self.config = config or ControlConfig()
        self.worker = _Worker(infer)
        self.actions: list[np.ndarray] = []
        self.pending = False
        self.tick_index = 0
        self.requested_at = 0  # the tick whose observation the pending request carries
        self.stats = LoopStats()

    def run(self, ticks: int) -> LoopStats:
        period = 1.0 / self.config.fps
        self.worker.start()
        next_tick = time.perf_counter()
        try:
            for _ in range(ticks):
                now = time.perf_counter()
                if now < next_tick:
                    time.sleep(next_tick - now)
                self.stats.start_delays.append(max(0.0, time.perf_counter() - next_tick))
                self._tick()
                next_tick += period
                if time.perf_counter() > next_tick + period:  # fell more than a tick behind: do not burst
                    next_tick = time.perf_counter()
        finally:
            self.worker.requests.put(None)
            self.worker.join(timeout=5)
        return self.stats

    def _tick(self) -> None:
        if self.worker.error is not None:
            raise RuntimeError("policy inference failed; the arm was held") from self.worker.error
        observation, measured, reading_time = self.read()
        while not self.worker.results.empty():
            chunk, seconds = self.worker.results.get()
            self.actions, self.pending = list(chunk[self.tick_index - self.requested_at :]), False
            self.stats.chunks += 1
            self.stats.inference_s.append(seconds)
        if len(self.actions) <= self.config.refill_at and not self.pending:
            self.worker.requests.put(observation)
            self.pending, self.requested_at = True, self.tick_index
        self.tick_index += 1
        action = self.actions.pop(0) if self.actions else None
        if action is None:
            self.stats.empty_ticks += 1
        command = self.safety.filter(action, measured, reading_time=reading_time)
        if command is not None:
            self.send(command)
