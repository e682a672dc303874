"""Any LeRobot robot as a fine-tuning environment: real time, safety always on, a person in the loop.

:class:`RobotEnv` is a gymnasium env over a LeRobot ``Robot`` (made by LeRobot's own factory from
its config: ``so101_follower``, ``franka_franky``, ...), so the RL trainer drives an arm exactly as
it drives the simulated task. One ``step`` is one control tick at ``fps``:

1. the action (in the policy's units) goes back to the robot's units and through the
   :class:`~tmrl_vla.robots.safety.SafetyLayer` against the latest reading, and is sent;
2. the env waits for the next tick and reads the robot (joints and cameras);
3. the person's keys (or a simulated person) say whether the episode succeeded or failed.

Between chunks the VLA and the agent decide. So that the arm does not stop meanwhile, the caller
hands the env the rest of the chunk (:meth:`RobotEnv.plan`): a bridge thread sends it, one action
per tick, on every tick the caller has not claimed, until the caller's next ``step``
(:meth:`RobotEnv.stop_bridging` first says how many ticks it took, so the caller can skip the
actions of its new chunk whose time has passed, as LeRobot's asynchronous inference does). Ticks
run from the plan are real ticks: they are recorded, their rewards and the person's keys come with
the next ``step``, and an episode can end on one (the next ``step`` then only reports that end).
Without a plan the arm holds its last command (a position-controlled arm stays where it is); if the
caller takes longer than a tick, the reading is renewed before the next command, so the safety
layer never judges a command against a stale position. ``late_ticks`` counts ticks that started
more than ``LATE_AFTER_S`` after their deadline. :class:`~tmrl_vla.robots.control.ControlLoop` is
the deployment loop, with inference in a worker beside the arm.

Rewards (``reward="step_penalty"``, the robot default): -1 per tick, 0 on the success tick, which
ends the episode as terminal; a time-out or a person's "failure" ends it as truncated, so its value
bootstraps. ``reward="sparse"`` gives 1 on success and 0 otherwise (the simulated task's).

Between episodes :meth:`RobotEnv.reset` drives the arm to ``home`` through the safety layer, then
waits for the person to reset the scene; each episode's wall time, the person's time, late ticks,
take-over ticks and safety interventions are in :attr:`RobotEnv.episode_log` (and ``info`` at its
end). A person can take the arm over (:meth:`RobotEnv.attach_intervention`), and every tick can be
recorded as a LeRobot dataset (:meth:`RobotEnv.attach_recorder`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE

from tmrl_vla.robots.features import action_dict, check_robot_fits_policy, observation_frame
from tmrl_vla.robots.people import ESTOP, FAILURE, INTERVENE, QUIT, SUCCESS, Person
from tmrl_vla.robots.safety import SafetyConfig, SafetyLayer

LATE_AFTER_S = 0.005  # a tick that starts this long after its deadline counts as late
BRIDGE_GRACE_S = 0.002  # the bridge takes a tick the caller has not claimed this long after it is due


class RobotNotCalibratedError(RuntimeError):
    """The robot's calibration is missing or differs from its motors; LeRobot would prompt for one."""


@dataclass(frozen=True)
class RobotEnvConfig:
    fps: float = 25.0  # control ticks per second: the rate of the policy's training data
    episode_length: int = 100  # ticks before an episode times out
    task: str = "pick up the cube"  # the instruction given to the policy
    reward: str = "step_penalty"  # "step_penalty" (-1 per tick, 0 on success) or "sparse" (1 on success)
    # Where the arm waits between episodes (robot units, in action order); None: where it was at connect.
    home: tuple[float, ...] | None = None
    home_tolerance: float = 2.0  # the arm is home when every joint is this close (robot units)
    home_timeout_s: float = 10.0  # longer than this to get home is an error (something blocks the arm)
    # policy units = robot units * scale + offset, per joint (None: the same units), e.g. a policy
    # trained in radians on a robot that reports degrees.
    joint_scale: tuple[float, ...] | None = None
    joint_offset: tuple[float, ...] | None = None
    # Keep the arm moving on the rest of the chunk while the policy decides (RobotEnv.plan); False:
    # the arm holds its last command until the next action.
    bridge: bool = True

    def __post_init__(self) -> None:
        if self.fps <= 0 or self.episode_length < 1:
            raise ValueError(f"fps must be > 0 and episode_length >= 1, got {self.fps}, {self.episode_length}")
        if self.reward not in ("step_penalty", "sparse"):
            raise ValueError(f"reward must be 'step_penalty' or 'sparse', got {self.reward!r}")
        if (self.joint_scale is None) != (self.joint_offset is None):
            raise ValueError("give joint_scale and joint_offset together (or neither)")
        if self.joint_scale is not None and (len(self.joint_scale) != len(self.joint_offset) or 0 in self.joint_scale):
            raise ValueError("joint_scale and joint_offset need one value per joint, and no scale may be 0")


@dataclass
class EpisodeRecord:
    episode: int
    ticks: int
    success: bool
    ended_by: str  # "success", "failure" (the person), "time_out"
    wall_s: float  # from its first action to its end
    person_s: float  # the person's time resetting the scene before it
    home_s: float  # driving the arm home before it
    waited_s: float  # the arm ready at home, waiting for the first action (the learner updating)
    late_ticks: int  # ticks that started more than LATE_AFTER_S late (the policy was deciding)
    intervention_ticks: int  # ticks a person drove the arm through the teleoperator
    bridged_ticks: int  # ticks sent from a plan while the policy decided (see RobotEnv.plan)
    safety: dict  # the safety layer's interventions during the episode, by reason


class RobotEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(
        self,
        robot,
        policy_config,
        safety: SafetyConfig,
        person: Person,
        config: RobotEnvConfig | None = None,
        *,
        rename_map: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``robot``: a LeRobot ``Robot`` (connected here if it is not)."""
        self.config = config or RobotEnvConfig()
        self.robot, self.person, self.clock = robot, person, clock
        self.rename_map = dict(rename_map or {})
        if not robot.is_connected:
            robot.connect(calibrate=False)
        if not robot.is_calibrated:
            robot.disconnect()
            raise RobotNotCalibratedError(
                f"{robot} has no calibration matching its motors: run `lerobot-calibrate --robot.type=... "
                f"--robot.id={robot.id}` first (fine-tuning never starts a calibration by itself)"
            )
        self.features = check_robot_fits_policy(
            policy_config, robot.observation_features, robot.action_features, rename_map=self.rename_map
        )
        self.joint_names = list(self.features[ACTION]["names"])
        if list(safety.joint_names) != self.joint_names:
            raise ValueError(
                f"the safety config's joints {list(safety.joint_names)} are not the robot's {self.joint_names}"
            )
        n = len(self.joint_names)
        self._scale = np.asarray(self.config.joint_scale or (1.0,) * n, dtype=np.float64)
        self._offset = np.asarray(self.config.joint_offset or (0.0,) * n, dtype=np.float64)
        if self._scale.shape != (n,):
            raise ValueError(f"joint_scale has {self._scale.shape[0]} values for the robot's {n} joints")
        self.safety = SafetyLayer(safety, clock=clock)
        self.period = 1.0 / self.config.fps
        self._setup_spaces(safety)
        self.episode_log: list[EpisodeRecord] = []
        self.on_episode: Callable[[EpisodeRecord], None] | None = None  # called as each episode ends
        self.recorder = None  # an EpisodeRecorder (attach_recorder): every tick recorded, episodes saved as they end
        self.intervention = None  # an Intervention (attach_intervention): a person's teleoperator, when active
        self._toggle = False  # the person pressed the take-over key since the intervention last asked
        self._was_intervening = False
        self.stop_requested = False  # the person pressed quit: the trainer stops after this episode
        self._bridge: threading.Thread | None = None
        self._claim = threading.Event()  # set by the caller to take the ticks back from the bridge
        self._bridge_error: BaseException | None = None
        self._bridged = 0  # ticks the bridge ran since the caller's last step
        self._pending_reward = 0.0  # their rewards, for the next step
        self._ended: str | None = None  # how the episode ended on a bridged tick, for the next step
        self._episode_over = False  # the episode ended (reported to the caller): reset before stepping on
        self._intervened_since_step = False
        self._t = 0
        self._episode = 0
        self._raw: dict = {}
        self._read()
        self._home = np.asarray(self.config.home if self.config.home is not None else self._measured, dtype=np.float64)

    def attach_recorder(self, recorder) -> None:
        """Record every tick (the reading the command followed, the command sent, its reward and
        end) into ``recorder`` (:class:`~tmrl_vla.robots.recorder.EpisodeRecorder`); an episode is
        saved when it ends and dropped when it is cut short (a reset mid-episode, a close)."""
        self.recorder = recorder

    def attach_intervention(self, intervention) -> None:
        """Let a person take over (:class:`~tmrl_vla.robots.intervention.Intervention`): on every tick
        it is active, its command replaces the policy's (still through the safety layer) and the tick
        is marked ``intervention`` in ``info`` and the recording. Wire a key toggle with
        ``toggle_requested=env.toggle_requested``."""
        self.intervention = intervention

    def continue_from(self, episodes: int) -> None:
        """Number the next episode ``episodes`` (a resumed run goes on counting: its log, and the
        scenes a simulated person sets, follow on from the run before)."""
        self._episode = int(episodes)

    @property
    def at_episode_start(self) -> bool:
        """No tick of the current episode has run (it was just reset): a stop here loses nothing."""
        return self._t == 0

    def toggle_requested(self) -> bool:
        """True once per press of the take-over key (for ``TeleopIntervention(toggle_requested=...)``)."""
        pressed, self._toggle = self._toggle, False
        return pressed

    # ------------------------------------------------------------------------- units and spaces
    def to_policy(self, joints: np.ndarray) -> np.ndarray:
        return (np.asarray(joints, np.float64) * self._scale + self._offset).astype(np.float32)

    def to_robot(self, action: np.ndarray) -> np.ndarray:
        return (np.asarray(action, np.float64) - self._offset) / self._scale

    def _setup_spaces(self, safety: SafetyConfig) -> None:
        low, high = self.to_policy(np.asarray(safety.lower)), self.to_policy(np.asarray(safety.upper))
        low, high = np.minimum(low, high), np.maximum(low, high)
        spaces = {OBS_STATE: gym.spaces.Box(-np.inf, np.inf, (len(low),), np.float32)}
        for key, feature in self.features.items():
            if key.startswith(f"{OBS_IMAGES}."):
                spaces[self.rename_map.get(key, key)] = gym.spaces.Box(0, 255, tuple(feature["shape"]), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)

    @property
    def task(self) -> str:
        return self.config.task

    # ------------------------------------------------------------------------- robot I/O
    def _read(self) -> None:
        self._raw = self.robot.get_observation()
        self._reading_time = self.clock()
        frame = observation_frame(self.features, self._raw, self.rename_map)
        self._measured = np.asarray(frame[OBS_STATE], dtype=np.float64)
        self._obs = {k: v for k, v in frame.items() if k != OBS_STATE}
        self._obs[OBS_STATE] = self.to_policy(self._measured)

    def _send(self, command: np.ndarray | None) -> np.ndarray | None:
        if self.clock() - self._reading_time > self.period:  # the policy took more than a tick
            self._read()
        sent = self.safety.filter(command, self._measured, reading_time=self._reading_time)
        if sent is not None:
            self.robot.send_action(action_dict(self.features, sent))
        return sent

    def _tick(self, command: np.ndarray | None) -> bool:
        """Send ``command`` (through the safety layer) at this tick, then sleep until the next one.
        True when this tick started late (the caller overran it, e.g. the policy deciding): it then
        starts now and the next one a full period after it, so missed ticks are not caught up with a
        burst of commands (which the safety layer's rate limit would drop)."""
        now = self.clock()
        late = now - self._next_tick > LATE_AFTER_S
        if late:
            self._next_tick = now
        self._send(command)
        self._next_tick += self.period
        delay = self._next_tick - self.clock()
        if delay > 0:
            time.sleep(delay)
        return late

    # ------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.stop_bridging()
        self._pending_reward, self._ended, self._bridged, self._episode_over = 0.0, None, 0, False
        if self.recorder is not None:
            self.recorder.discard_episode()  # an episode cut short is not data
        if self._was_intervening:  # every episode starts with the policy in control
            self._toggle, self._was_intervening = True, False
        home_s = self.go_home()
        # a person who asked to stop is not asked to reset the scene for an episode that will not run
        person_s = 0.0 if self.stop_requested else self.person.reset_scene(self._episode)
        self.person.poll()  # a label pressed before the episode started does not count
        self._read()
        self._t = 0
        self._late = 0
        self._intervened = 0
        self._bridged_total = 0
        self._safety_before = Counter(self.safety.counts)
        self._ready_at = self.clock()  # the episode's clock starts at its first action (see step)
        self._pending = {"person_s": person_s, "home_s": home_s}
        return self._observation(), {"is_success": False}

    def go_home(self) -> float:
        """Drive the arm to ``home`` through the safety layer (its speed limit paces the motion)."""
        start = self.clock()
        self._next_tick = start
        while True:
            self._read()
            if np.all(np.abs(self._measured - self._home) <= self.config.home_tolerance):
                return self.clock() - start
            if self.clock() - start > self.config.home_timeout_s:
                raise RuntimeError(
                    f"the arm did not reach home within {self.config.home_timeout_s} s: it is at "
                    f"{np.round(self._measured, 2).tolist()}, home is {np.round(self._home, 2).tolist()} "
                    f"({', '.join(self.joint_names)}); is something in its way?"
                )
            self._tick(self._home)

    def plan(self, actions: np.ndarray) -> None:
        """The actions that follow the one just stepped (policy units, one row per tick: the rest of
        the chunk). Each tick the caller has not claimed by ``BRIDGE_GRACE_S`` after it is due is
        sent from this plan, by a bridge thread, until the caller's next ``step`` or
        :meth:`stop_bridging`; then the arm holds. Nothing happens after a reset (the arm waits at
        home for the first action) or once the episode has ended."""
        if self._bridge is not None:
            raise RuntimeError("a plan is already running: step (or stop_bridging) before planning again")
        actions = np.asarray(actions, dtype=np.float64).reshape(-1, len(self.joint_names))
        over = self._t == 0 or self._ended is not None or self._episode_over  # nothing to continue
        if not self.config.bridge or over or len(actions) == 0:
            return
        self._claim.clear()
        self._bridge = threading.Thread(target=self._run_bridge, args=(actions,), name="robot-bridge", daemon=True)
        self._bridge.start()

    def stop_bridging(self) -> int:
        """Take the ticks back from the bridge (it finishes the tick it is in, so the next command
        goes out on time); returns how many ticks it ran since the last step: the caller's new
        chunk was decided before them, so its first that many actions are already past."""
        if self._bridge is not None:
            self._claim.set()
            self._bridge.join()
            self._bridge = None
            if self._bridge_error is not None:
                error, self._bridge_error = self._bridge_error, None
                raise RuntimeError("the robot failed while the arm was bridging a decision") from error
        return self._bridged

    def _run_bridge(self, actions: np.ndarray) -> None:
        try:
            for action in actions:
                if self._claim.wait(max(0.0, self._next_tick + BRIDGE_GRACE_S - self.clock())):
                    return
                self._bridged += 1
                self._bridged_total += 1
                reward, self._ended = self._control_tick(self.to_robot(action))
                self._pending_reward += reward
                if self._ended is not None:
                    return
        except BaseException as error:  # re-raised in the caller's thread by stop_bridging
            self._bridge_error = error

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (len(self.joint_names),):
            raise ValueError(f"an action has {len(self.joint_names)} values ({self.joint_names}), got {action.shape}")
        self.stop_bridging()
        if self._t == 0:  # the learner may have updated since the reset: the arm waited at home
            self._episode_start = self._next_tick = self.clock()
            self._pending["waited_s"] = self._episode_start - self._ready_at
        reward, ended = self._pending_reward, self._ended
        intervened = self._intervened_since_step
        self._pending_reward, self._ended, self._bridged, self._intervened_since_step = 0.0, None, 0, False
        if ended is None:  # an episode that ended on a bridged tick runs no more ticks
            tick_reward, ended = self._control_tick(self.to_robot(action))
            reward += tick_reward
            intervened |= self._intervened_since_step
            self._intervened_since_step = False
        info = {"is_success": ended == SUCCESS, "intervention": intervened}
        if ended is not None:
            self._episode_over = True
            if self.recorder is not None:
                self.recorder.save_episode()
            info["episode"] = self._close_episode(ended == SUCCESS, ended)
        return self._observation(), reward, ended == SUCCESS, ended in (FAILURE, "time_out"), info

    def _control_tick(self, command: np.ndarray) -> tuple[float, str | None]:
        """One tick: the command (or the teleoperator's, while it has the arm) goes out through the
        safety layer, the robot is read and the person heard. Returns the tick's reward and how it
        ended the episode (``"success"``, ``"failure"``, ``"time_out"``) or None."""
        observed = self._raw  # the reading this command follows
        intervening = self.intervention is not None and self.intervention.active()
        if intervening != self._was_intervening:
            self._was_intervening = intervening
            self.person.say("the teleoperator has the arm" if intervening else "the policy has the arm again")
        if intervening:
            taken = self.intervention.action(observed)
            command = np.array([taken[name] for name in self.joint_names], dtype=np.float64)
            self._intervened += 1
            self._intervened_since_step = True
        self._late += self._tick(command)
        sent = self.safety.last_sent
        self._read()
        self._t += 1
        events = self.person.poll()
        self._hear(events)
        success = SUCCESS in events
        ended = (
            SUCCESS
            if success
            else FAILURE
            if FAILURE in events
            else "time_out"
            if self._t >= self.config.episode_length
            else None
        )
        reward = float(success) - 1.0 if self.config.reward == "step_penalty" else float(success)
        if self.recorder is not None and sent is not None:
            self.recorder.add(observed, sent, reward=reward, done=success, intervention=intervening)
        return reward, ended

    def _hear(self, events: set[str]) -> None:
        """The keys that act at once: the e-stop, the take-over toggle and quit."""
        if ESTOP in events:
            if self.safety.stopped:
                self.safety.release()
                self.person.say("e-stop released: the policy drives the arm again")
            else:
                self.safety.estop()
                self.person.say("E-STOP: the arm is held where it is (press e again to release)")
        if INTERVENE in events:
            self._toggle = True
        if QUIT in events and not self.stop_requested:
            self.stop_requested = True
            self.person.say("stopping after this episode (the run is saved; resume with --resume=true)")

    def _observation(self) -> dict[str, np.ndarray]:
        return dict(self._obs)

    def _close_episode(self, success: bool, ended_by: str) -> EpisodeRecord:
        record = EpisodeRecord(
            episode=self._episode,
            ticks=self._t,
            success=success,
            ended_by=ended_by,
            wall_s=self.clock() - self._episode_start,
            person_s=self._pending["person_s"],
            home_s=self._pending["home_s"],
            late_ticks=self._late,
            intervention_ticks=self._intervened,
            bridged_ticks=self._bridged_total,
            waited_s=self._pending.get("waited_s", 0.0),
            safety=dict(Counter(self.safety.counts) - self._safety_before),
        )
        self.episode_log.append(record)
        wins = sum(r.success for r in self.episode_log)
        taken = f", {record.intervention_ticks} ticks by the teleoperator" if record.intervention_ticks else ""
        self.person.say(
            f"episode {record.episode} ended: {record.ended_by} after {record.wall_s:.1f} s{taken} "
            f"({wins}/{len(self.episode_log)} successes this session)"
        )
        if self.on_episode is not None:
            self.on_episode(record)
        self._episode += 1
        return record

    def close(self) -> None:
        """Leave the arm safe: LeRobot's ``disconnect`` turns the torque off (``disable_torque_on_disconnect``)."""
        try:
            self.stop_bridging()  # a robot that failed while bridging still gets the rest of this
        finally:
            if self.recorder is not None:
                self.recorder.discard_episode()
                self.recorder.close()
            if self.intervention is not None:
                self.intervention.close()
            if self.robot.is_connected:
                self.robot.disconnect()
            close = getattr(self.person, "close", None)
            if close is not None:
                close()
