"""The simulated SO-101 served to other processes: the scene protocol, and LeRobot's own
``lerobot-record`` recording demonstrations through the emulated bus, the remote camera and the
scripted expert teleoperator."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tmrl_vla.envs  # noqa: F401  (headless GL before mujoco)
from tmrl_vla.robots.sim.scene_link import SceneConnection, SceneServer, parse_address
from tmrl_vla.robots.sim.so101 import SimulatedSO101, SimulatedSO101Config

ROOT = Path(__file__).resolve().parents[3]


def test_addresses_are_loopback_ports_and_names_stay_names():
    assert parse_address("127.0.0.1:4000") == ("127.0.0.1", 4000)
    assert parse_address("localhost:4000") == ("127.0.0.1", 4000)
    assert parse_address("so101_sim") is None
    with pytest.raises(ValueError, match="served on 127.0.0.1 only"):
        parse_address("10.0.0.5:4000")


def test_the_scene_server_answers_frames_state_resets_and_errors():
    sim = SimulatedSO101(SimulatedSO101Config(name="served_test"))
    sim.start(seed=3)
    server = SceneServer(sim, image_size=64, expert=lambda: {"gripper.pos": 50.0}).start()
    link = SceneConnection(server.port)
    try:
        frame = link.frame("front")
        camera = sim.open_camera("front", 64, 64)
        try:
            assert frame.shape == (64, 64, 3) and np.abs(frame.astype(int) - camera.read().astype(int)).mean() < 2.0
        finally:
            camera.close()
        before = link.request({"op": "state"})
        assert link.request({"op": "reset", "seed": 11}) == {"ok": True}
        after = link.request({"op": "state"})
        assert not np.allclose(before["cube"][:2], after["cube"][:2]) and after["success"] is False
        assert link.request({"op": "expert"}) == {"action": {"gripper.pos": 50.0}}
        with pytest.raises(ValueError, match="renders the cameras"):
            link.frame("top")
        with pytest.raises(ValueError, match="unknown op 'fly'"):
            link.request({"op": "fly"})
    finally:
        link.close()
        server.stop()
        sim.stop()
    with pytest.raises(ConnectionError, match="no simulation answers"):
        SceneConnection(server.port)


def serve(tmp_path: Path, env: dict) -> tuple[subprocess.Popen, list[str]]:
    """The served SO-101 and the LeRobot flags it prints (robot, cameras, the expert as teleoperator)."""
    command = [sys.executable, "-m", "tmrl_vla.robots.sim.serve", f"--calibration-dir={tmp_path / 'calibration'}"]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        if line.startswith("LeRobot flags: "):
            return server, shlex.split(line.removeprefix("LeRobot flags: "))
        if not line and server.poll() is not None:
            break
    server.kill()
    raise AssertionError("the simulation did not print its flags")


def record(tmp_path: Path, env: dict, flags: list[str], name: str, seconds: int, tool: str = "lerobot-record") -> Path:
    """LeRobot's ``tool`` with ``flags``, one episode recorded; returns the dataset's root. On a CPU
    loaded past LeRobot's reply window a reply can miss it while LeRobot connects, where it does not
    retry (see serve.py): then the command is run again, up to three times in all, and each miss is
    printed; a failure after connecting is not retried."""
    for attempt in range(3):
        root = tmp_path / f"{name}{attempt}"
        command = [
            str(Path(sys.executable).with_name(tool)),
            *flags,
            f"--dataset.repo_id=local/{name}",
            f"--dataset.root={root}",
            "--dataset.num_episodes=1",
            f"--dataset.episode_time_s={seconds}",
            "--dataset.fps=25",
            "--dataset.single_task=pick up the cube",
            "--dataset.push_to_hub=false",
            "--display_data=false",
        ]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        # LeRobot's traceback passes through its connect: a reply (a ping, a calibration read) came late
        missed_at_connect = "robot.connect()" in done.stderr and "motors_bus.py" in done.stderr
        if not (done.returncode and missed_at_connect):
            break
        print(f"{tool}: attempt {attempt + 1} missed a reply while connecting:\n{done.stderr[-1500:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    return root


ENV = {**os.environ, "MUJOCO_GL": "egl", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def served_arm(tmp_path_factory):
    """One served SO-101 for the tests below (starting one costs seconds of imports); on teardown
    it must stop cleanly on SIGTERM."""
    server, flags = serve(tmp_path_factory.mktemp("served"), ENV)
    try:
        yield flags
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert server.returncode == 0


def test_lerobot_record_records_demonstrations_on_the_served_arm(served_arm, tmp_path):
    root = record(tmp_path, ENV, served_arm, "served_demos", seconds=5)
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 1 and info["total_frames"] >= 100 and info["robot_type"] == "so_follower"
    assert info["features"]["observation.images.front"]["shape"] == [64, 64, 3]
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    demos = LeRobotDataset("local/served_demos", root=root)
    gripper = np.array([demos[i]["action"][5].item() for i in range(len(demos))])
    assert gripper[0] > 80 and gripper.min() < 60  # the expert opened, then closed on the cube


def test_lerobot_rollout_runs_an_agent_fine_tuned_on_the_simulated_arm(served_arm, tiny_base_policy, tmp_path):
    """The user's last step: the agent the SO-101 recipe saved, deployed by LeRobot's own
    ``lerobot-rollout`` (recording: ``--strategy.type=episodic``) on the arm. The tiny policy works
    in the scene's units and the arm in LeRobot's degrees: the agent's saved processors convert, so
    its commands are LeRobot degrees near where the arm is."""
    from test_robot_finetune import recipe

    from tmrl_vla.robot_finetune import RobotFinetuneConfig, parse_args, train

    args = recipe(tiny_base_policy, tmp_path / "run", 4)[2:]  # the recipe's flags, run in this process
    train(parse_args(RobotFinetuneConfig(), args))
    agent = tmp_path / "run" / "dsrl" / "pretrained_model"
    robot = [f for f in served_arm if not f.startswith("--teleop.")]
    rollout = [*robot, "--strategy.type=episodic", f"--policy.path={agent}", "--fps=25", "--task=pick up the cube"]
    rollout += ["--dataset.reset_time_s=0", "--play_sounds=false"]
    root = record(tmp_path, ENV, rollout, "rollout_agent", seconds=6, tool="lerobot-rollout")
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    episode = LeRobotDataset("local/rollout_agent", root=root)
    assert len(episode) >= 40
    actions = np.stack([episode[i]["action"].numpy() for i in range(len(episode))])
    states = np.stack([episode[i]["observation.state"].numpy() for i in range(len(episode))])
    assert np.isfinite(actions).all()
    # degrees, not radians read as degrees: the body joints' commands stay within 60 degrees of the arm
    assert np.abs(actions[:, :5] - states[:, :5]).max() < 60 and np.abs(actions[:, :5]).max() > 2
