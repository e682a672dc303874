"""Robot episodes as a LeRobot dataset: LeRobot reads them back, and a killed run loses only its episode in flight."""

import numpy as np
import pytest

from tmrl_vla.robots.features import robot_dataset_features
from tmrl_vla.robots.recorder import EpisodeRecorder

NAMES = ["shoulder_pan", "gripper"]


def features():
    observation = {f"{n}.pos": float for n in NAMES} | {"front": (64, 64, 3)}
    return robot_dataset_features(observation, {f"{n}.pos": float for n in NAMES})


def record(recorder, ticks, start=0.0, intervene_at=None):
    for t in range(ticks):
        observation = {"shoulder_pan.pos": start + t, "gripper.pos": 50.0, "front": np.full((64, 64, 3), t, np.uint8)}
        done = t == ticks - 1
        recorder.add(observation, np.array([start + t + 0.5, 40.0]), reward=float(done) - 1, done=done,
                     intervention=t == intervene_at)  # fmt: skip


@pytest.mark.parametrize("use_videos", [False, True])
def test_episodes_are_a_lerobot_dataset_with_rewards_and_interventions(tmp_path, use_videos):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    recorder = EpisodeRecorder(
        tmp_path / "ds", "local/test", fps=25, features=features(), task="pick", use_videos=use_videos
    )
    record(recorder, 3, intervene_at=1)
    recorder.save_episode()
    record(recorder, 2, start=10.0)
    recorder.save_episode()
    dataset = LeRobotDataset("local/test", root=tmp_path / "ds")
    assert dataset.meta.total_episodes == 2 and len(dataset) == 5
    first, second = dataset[1], dataset[3]
    assert first["observation.state"].tolist() == [1.0, 50.0] and first["action"].tolist() == [1.5, 40.0]
    assert bool(first["intervention"]) and not bool(second["intervention"])
    assert first["next.reward"].item() == -1.0 and bool(dataset[2]["next.done"])
    assert first["observation.images.front"].shape == (3, 64, 64) and first["task"] == "pick"


def test_a_killed_run_loses_only_the_episode_in_flight_and_appends_after(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    recorder = EpisodeRecorder(
        tmp_path / "ds", "local/test", fps=25, features=features(), task="pick", use_videos=False
    )
    record(recorder, 3)
    recorder.save_episode()
    record(recorder, 2, start=10.0)  # the process dies here: never saved, never finalized
    del recorder

    again = EpisodeRecorder(tmp_path / "ds", "local/test", fps=25, features=features(), task="pick", use_videos=False)
    assert again.num_episodes == 1
    record(again, 4, start=20.0)
    again.save_episode()
    dataset = LeRobotDataset("local/test", root=tmp_path / "ds")
    assert dataset.meta.total_episodes == 2 and len(dataset) == 7
    assert dataset[3]["observation.state"].tolist() == [20.0, 50.0]


def test_another_robots_dataset_is_refused(tmp_path):
    recorder = EpisodeRecorder(
        tmp_path / "ds", "local/test", fps=25, features=features(), task="pick", use_videos=False
    )
    record(recorder, 2)
    recorder.save_episode()
    other = robot_dataset_features({"a.pos": float, "front": (64, 64, 3)}, {"a.pos": float})
    with pytest.raises(ValueError, match="recorded with other features"):
        EpisodeRecorder(tmp_path / "ds", "local/test", fps=25, features=other, task="pick", use_videos=False)


def test_video_of_frames_too_small_to_encode_is_refused_before_a_crash(tmp_path):
    tiny = robot_dataset_features({"a.pos": float, "front": (16, 16, 3)}, {"a.pos": float})
    with pytest.raises(ValueError, match="under 32 px a side"):
        EpisodeRecorder(tmp_path / "ds", "local/test", fps=25, features=tiny, task="pick", use_videos=True)
    EpisodeRecorder(tmp_path / "ds", "local/test", fps=25, features=tiny, task="pick", use_videos=False).close()
