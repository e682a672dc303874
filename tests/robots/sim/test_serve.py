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
    server = SceneServer(sim, expert=lambda: {"gripper.pos": 50.0}).start()
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


def test_lerobot_record_records_demonstrations_on_the_served_arm(tmp_path):
    env = {**os.environ, "MUJOCO_GL": "egl", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    serve = [sys.executable, "-m", "tmrl_vla.robots.sim.serve", f"--calibration-dir={tmp_path / 'calibration'}"]
    server = subprocess.Popen(serve, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        flags, deadline = None, time.monotonic() + 120
        while flags is None and time.monotonic() < deadline:
            line = server.stdout.readline()
            if line.startswith("LeRobot flags: "):
                flags = shlex.split(line.removeprefix("LeRobot flags: "))
            assert line or server.poll() is None, "the simulation exited before it was ready"
        assert flags is not None
        for attempt in range(2):  # a reply can miss LeRobot's window at connect, where it does not retry
            root = tmp_path / f"demos{attempt}"
            record = [
                str(Path(sys.executable).with_name("lerobot-record")),
                *flags,
                "--dataset.repo_id=local/served_demos",
                f"--dataset.root={root}",
                "--dataset.num_episodes=1",
                "--dataset.episode_time_s=5",
                "--dataset.fps=25",
                "--dataset.single_task=pick up the cube",
                "--dataset.push_to_hub=false",
                "--display_data=false",
            ]
            done = subprocess.run(record, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
            if not (done.returncode and "There is no status packet" in done.stderr and "_handshake" in done.stderr):
                break  # (see serve.py: a loaded CPU)
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        server.terminate()
        server.wait(timeout=20)
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 1 and info["total_frames"] >= 100 and info["robot_type"] == "so_follower"
    assert info["features"]["observation.images.front"]["shape"] == [64, 64, 3]
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    demos = LeRobotDataset("local/served_demos", root=root)
    gripper = np.array([demos[i]["action"][5].item() for i in range(len(demos))])
    assert gripper[0] > 80 and gripper.min() < 60  # the expert opened, then closed on the cube
    assert server.returncode == 0  # it stopped cleanly on SIGTERM
