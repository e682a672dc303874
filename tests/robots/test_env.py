"""RobotEnv over a fake LeRobot robot: rewards and episode ends, units, safety, keys, timing, exits."""

import time

import numpy as np
import pytest

from tmrl_vla.robots.env import RobotEnv, RobotEnvConfig, RobotNotCalibratedError
from tmrl_vla.robots.features import RobotPolicyMismatch
from tmrl_vla.robots.people import ESTOP, FAILURE, QUIT, SUCCESS
from tmrl_vla.robots.safety import SafetyConfig

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
NAMES = tuple(f"{j}.pos" for j in JOINTS)


@pytest.fixture(scope="module")
def policy_config():
    from tmrl_vla.models.tiny_smolvla import make_tiny_smolvla

    return make_tiny_smolvla().config  # observation.images.front (3, 64, 64), a 6-joint state


class FakeRobot:
    """A LeRobot-shaped robot whose joints reach each command at once."""

    id = "fake"

    def __init__(self, calibrated=True, cameras=None):
        self.q = np.zeros(6)
        self.sent: list[dict] = []
        self.is_connected = False
        self.is_calibrated = calibrated
        self.cameras = {"front": (64, 64, 3)} if cameras is None else cameras
        self.observation_features = {**{n: float for n in NAMES}, **self.cameras}
        self.action_features = {n: float for n in NAMES}

    def connect(self, calibrate=True):
        assert calibrate is False  # fine-tuning never starts a calibration
        self.is_connected = True

    def disconnect(self):
        self.is_connected = False

    def get_observation(self):
        return {**dict(zip(NAMES, self.q.tolist(), strict=True)), "front": np.zeros((64, 64, 3), np.uint8)}

    def send_action(self, action):
        self.sent.append(dict(action))
        self.q = np.array([action[n] for n in NAMES])
        return action


class ScriptedPerson:
    """Events by tick of the episode (1 = the first step): ``{tick: {events}}``. The env polls once
    after the reset, to drop keys pressed before the episode started: that is tick 0."""

    def __init__(self, events=None):
        self.events, self.tick, self.resets, self.closed = events or {}, 0, 0, False

    def reset_scene(self, episode):
        self.resets += 1
        self.tick = -1
        return 0.25

    def poll(self):
        self.tick += 1
        return set(self.events.get(self.tick, ()))

    def say(self, text):
        self.said = [*getattr(self, "said", []), text]

    def close(self):
        self.closed = True


def safety(step=50.0):
    return SafetyConfig(NAMES, (-170.0,) * 5 + (0.0,), (170.0,) * 5 + (100.0,), (step,) * 6, min_period_s=0.0)


def make_env(policy_config, person=None, robot=None, **config):
    config = {"fps": 200.0, "episode_length": 4, **config}
    return RobotEnv(robot or FakeRobot(), policy_config, safety(), person or ScriptedPerson(), RobotEnvConfig(**config))


def test_step_penalty_rewards_success_terminal_and_time_out_truncated(policy_config):
    env = make_env(policy_config, ScriptedPerson({2: {SUCCESS}}))
    env.reset(seed=0)
    _, r1, term1, trunc1, _ = env.step(np.zeros(6, np.float32))
    _, r2, term2, trunc2, info = env.step(np.zeros(6, np.float32))
    assert (r1, term1, trunc1) == (-1.0, False, False)
    assert (r2, term2, trunc2) == (0.0, True, False) and info["is_success"]
    assert info["episode"].ended_by == "success" and info["episode"].ticks == 2 and info["episode"].person_s == 0.25
    assert env.person.said[-1].startswith("episode 0 ended: success after") and "(1/1 successes" in env.person.said[-1]
    env.person.events = {}  # nobody says success this time
    env.reset(seed=1)
    ends = [env.step(np.zeros(6, np.float32))[2:4] for _ in range(4)]
    assert ends == [(False, False)] * 3 + [(False, True)]  # a time-out bootstraps: truncated, not terminal
    assert [r.ended_by for r in env.episode_log] == ["success", "time_out"]


def test_a_person_failure_ends_the_episode_as_truncated_and_sparse_rewards(policy_config):
    env = make_env(policy_config, ScriptedPerson({1: {FAILURE}}), reward="sparse")
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(np.zeros(6, np.float32))
    assert (reward, terminated, truncated) == (0.0, False, True) and info["episode"].ended_by == "failure"


def test_units_convert_both_ways(policy_config):
    robot = FakeRobot()
    scale, offset = (np.pi / 180,) * 5 + (0.00045,), (0.0,) * 5 + (0.001,)
    env = make_env(policy_config, robot=robot, joint_scale=scale, joint_offset=offset)
    obs, _ = env.reset(seed=0)
    assert obs["observation.state"].dtype == np.float32 and obs["observation.images.front"].shape == (64, 64, 3)
    target = np.array([np.deg2rad(10.0)] * 5 + [0.001 + 0.00045 * 40], np.float32)  # 10 degrees, gripper 40
    obs, *_ = env.step(target)
    assert robot.sent[-1] == pytest.approx(dict(zip(NAMES, [10.0] * 5 + [40.0], strict=True)), abs=1e-3)
    assert np.allclose(obs["observation.state"], target, atol=1e-6)
    assert np.allclose(env.action_space.high[:5], np.deg2rad(170.0))


def test_e_stop_holds_the_arm_until_pressed_again_and_quit_asks_the_run_to_stop(policy_config):
    robot = FakeRobot()
    env = make_env(policy_config, ScriptedPerson({1: {ESTOP}, 3: {ESTOP, QUIT}}), robot=robot, episode_length=10)
    env.reset(seed=0)
    env.step(np.full(6, 0.0, np.float32))  # e-stop pressed during this tick
    env.step(np.full(6, 30.0, np.float32))
    assert robot.sent[-1]["shoulder_pan.pos"] == 0.0 and env.safety.counts["estop"] >= 1
    env.step(np.full(6, 30.0, np.float32))  # released here, and quit
    env.step(np.full(6, 30.0, np.float32))
    assert robot.sent[-1]["shoulder_pan.pos"] == 30.0 and env.stop_requested
    assert [t.split(":")[0] for t in env.person.said] == [
        "E-STOP",
        "e-stop released",
        "stopping after this episode (the run is saved; resume with --resume=true)",
    ]


def test_ticks_keep_their_rate_when_the_caller_overruns_them(policy_config):
    """A slow decision makes its tick late; the next one still waits a full period (no burst).

    Ticks of 50 ms (not the robots' 20-33 ms): a loaded CI machine can stall a thread for tens of
    milliseconds, which would make further ticks late and this count ambiguous."""
    env = make_env(policy_config, fps=20.0, episode_length=100)
    env.reset(seed=0)
    sent_at = []
    real_send = env.robot.send_action
    env.robot.send_action = lambda a: sent_at.append(time.monotonic()) or real_send(a)
    for k in range(12):
        if k % 4 == 0:
            time.sleep(0.125)  # the policy deciding: 2.5 ticks
        env.step(np.zeros(6, np.float32))
    gaps = np.diff(sent_at)
    # no burst after a late tick (a burst sends within a millisecond); decisions 2 and 3 overran (the
    # episode's clock starts at its first action, so the pause before it is not late)
    assert gaps.min() >= 0.05 * 0.5 and env._late == 2
    assert env.safety.counts["rate"] == 0


def test_the_arm_is_driven_home_between_episodes(policy_config):
    robot = FakeRobot()
    home = (5.0, 0.0, 0.0, 0.0, 0.0, 50.0)
    env = make_env(policy_config, robot=robot, home=home)
    env.reset(seed=0)
    assert np.allclose(robot.q, home) and env.episode_log == []
    env.step(np.full(6, 20.0, np.float32))
    env.reset(seed=1)
    assert np.allclose(robot.q, home)


def test_a_blocked_arm_that_never_gets_home_is_an_error(policy_config):
    robot = FakeRobot()
    robot.send_action = lambda action: action  # the arm does not move
    env = make_env(policy_config, robot=robot, home=(30.0,) * 5 + (0.0,), home_timeout_s=0.05)
    with pytest.raises(RuntimeError, match="did not reach home within 0.05 s"):
        env.reset(seed=0)


def test_uncalibrated_or_unfitting_robots_are_refused(policy_config):
    robot = FakeRobot(calibrated=False)
    with pytest.raises(RobotNotCalibratedError, match="lerobot-calibrate"):
        make_env(policy_config, robot=robot)
    assert not robot.is_connected
    with pytest.raises(RobotPolicyMismatch, match="cameras"):
        make_env(policy_config, robot=FakeRobot(cameras={"wrist": (64, 64, 3)}))


def test_close_disconnects_the_robot_and_the_person(policy_config):
    person, robot = ScriptedPerson(), FakeRobot()
    env = make_env(policy_config, person, robot)
    records = []
    env.on_episode = records.append
    env.reset(seed=0)
    for _ in range(4):
        env.step(np.zeros(6, np.float32))
    env.close()
    assert not robot.is_connected and person.closed and len(records) == 1


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="reward must be"):
        RobotEnvConfig(reward="dense")
    with pytest.raises(ValueError, match="together"):
        RobotEnvConfig(joint_scale=(1.0,))


def test_the_arm_keeps_moving_on_the_plan_while_the_caller_decides(policy_config):
    robot = FakeRobot()
    env = make_env(policy_config, robot=robot, fps=25.0, episode_length=100)
    env.reset(seed=0)
    env.step(np.zeros(6, np.float32))
    plan = np.arange(1.0, 11.0)[:, None].repeat(6, axis=1)  # 10 ticks of the chunk's rest: 1, 2, ...
    env.plan(plan)
    time.sleep(0.1)  # deciding for 2.5 ticks
    bridged = env.stop_bridging()
    assert 1 <= bridged <= 4 and [a["elbow_flex.pos"] for a in robot.sent[-bridged:]] == list(plan[:bridged, 0])
    _, reward, *_ = env.step(np.full(6, 20.0, np.float32))
    assert reward == -1.0 - bridged  # the bridged ticks' rewards come with the next step
    assert robot.sent[-1]["elbow_flex.pos"] == 20.0  # (how late ticks fall: eval/so101_sim_check.py)
    env.plan(plan[:3])
    time.sleep(0.15)  # longer than the plan: it runs out, then the arm holds
    assert env.stop_bridging() == 3 and robot.sent[-1]["elbow_flex.pos"] == 3.0
    with pytest.raises(ValueError, match="an action has 6 values"):
        env.step(np.zeros(5, np.float32))


def test_an_episode_can_end_on_a_bridged_tick_and_plans_stop_at_episode_ends(policy_config):
    robot = FakeRobot()
    env = make_env(policy_config, ScriptedPerson({2: {SUCCESS}}), robot=robot, fps=50.0, episode_length=100)
    env.reset(seed=0)
    env.plan(np.ones((5, 6)))  # before the first action there is nothing to continue
    assert env._bridge is None
    env.step(np.zeros(6, np.float32))
    env.plan(np.full((5, 6), 7.0))
    time.sleep(0.08)
    sent = len(robot.sent)
    _, reward, terminated, truncated, info = env.step(np.full(6, 9.0, np.float32))
    assert (reward, terminated, truncated) == (0.0, True, False) and info["episode"].ticks == 2
    assert info["episode"].bridged_ticks == 1 and len(robot.sent) == sent  # the success came on the bridged tick
    assert robot.sent[-1]["elbow_flex.pos"] == 7.0  # and the caller's action was not sent
    env.plan(np.ones((5, 6)))
    assert env._bridge is None  # the episode is over
    env.reset(seed=1)
    env.step(np.zeros(6, np.float32))


def test_a_robot_failing_while_bridging_is_raised_at_the_next_step_and_the_arm_still_released(policy_config):
    robot = FakeRobot()
    env = make_env(policy_config, robot=robot, fps=50.0, episode_length=100)
    env.reset(seed=0)
    env.step(np.zeros(6, np.float32))

    def unplugged(action):
        raise ConnectionError("the bus stopped answering")

    robot.send_action = unplugged
    env.plan(np.ones((5, 6)))
    time.sleep(0.05)
    with pytest.raises(RuntimeError, match="while the arm was bridging") as raised:
        env.step(np.zeros(6, np.float32))
    assert isinstance(raised.value.__cause__, ConnectionError)
    env.plan(np.ones((5, 6)))
    time.sleep(0.05)
    with pytest.raises(RuntimeError, match="while the arm was bridging"):
        env.close()  # the failure is not swallowed, and the arm is left safe all the same
    assert not robot.is_connected


def test_a_batch_starts_each_chunk_after_the_ticks_its_robot_bridged(policy_config):
    from tmrl_vla.envs.batched import BatchedEnv

    robot = FakeRobot()
    envs = BatchedEnv(lambda: make_env(policy_config, robot=robot, fps=50.0, episode_length=100), 1)
    envs.reset([0])
    chunk = np.arange(10.0)[None, :, None].repeat(6, axis=2)  # (1 env, 10 actions, 6 joints)
    now = envs.start_chunk(chunk, 5)
    assert now[0, :, 0].tolist() == [0, 1, 2, 3, 4]  # nothing bridged before the first chunk
    for k in range(5):
        envs.step(now[:, k])
    envs.end_chunk()
    time.sleep(0.15)  # the rest (5, ..., 9) runs out while the next chunk is decided
    assert robot.sent[-1]["elbow_flex.pos"] == 9.0
    now = envs.start_chunk(chunk + 100.0, 5)
    assert now[0, :, 0].tolist() == [105, 106, 107, 108, 109]  # its first five ticks have passed
    envs.close()


def test_without_bridging_the_arm_holds_while_the_caller_decides(policy_config):
    robot = FakeRobot()
    env = make_env(policy_config, robot=robot, fps=50.0, episode_length=100, bridge=False)
    env.reset(seed=0)
    env.step(np.zeros(6, np.float32))
    sent = len(robot.sent)
    env.plan(np.ones((5, 6)))
    time.sleep(0.05)
    assert env.stop_bridging() == 0 and len(robot.sent) == sent
