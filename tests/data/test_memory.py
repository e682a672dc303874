"""InMemoryDemos against LeRobot's own LeRobotDataset with action-chunk ``delta_timestamps``."""

import numpy as np
import pytest
import torch

from tmrl_vla.data.memory import InMemoryDemos

IMAGE = "observation.images.front"


def lerobot_reference(repo_id, root, chunk: int):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    fps = LeRobotDataset(repo_id, root=root, video_backend="pyav").meta.fps
    delta = {"action": [i / fps for i in range(chunk)]}
    return LeRobotDataset(repo_id, root=root, delta_timestamps=delta, video_backend="pyav")


def assert_batch_matches_lerobot(batch, reference, index, image_keys):
    assert len(batch["task"]) == len(index)
    for row, i in enumerate(index):
        ref = reference[i]
        for key in image_keys:
            assert batch[key].dtype == torch.float32 and ref[key].dtype == torch.float32
            torch.testing.assert_close(batch[key][row], ref[key], atol=1 / 255, rtol=0)
        assert torch.equal(batch["observation.state"][row], ref["observation.state"]), i
        assert torch.equal(batch["action"][row], ref["action"]), i
        assert torch.equal(batch["action_is_pad"][row], ref["action_is_pad"]), i
        assert batch["task"][row] == ref["task"], i


@pytest.fixture(scope="module")
def demos(tiny_demos):
    config, root, stats = tiny_demos
    chunk = 10
    return InMemoryDemos(config.repo_id, root, chunk_size=chunk), lerobot_reference(config.repo_id, root, chunk), stats


def test_every_frame_of_the_recorded_demos_matches_lerobot(demos):
    mem, reference, stats = demos
    assert len(mem) == len(reference) == stats.frames
    assert mem.image_keys == [IMAGE]
    index = torch.arange(len(mem))
    batch = mem.batch(index)
    assert batch[IMAGE].shape == (len(mem), 3, 64, 64)
    assert batch["action"].shape == (len(mem), 10, 6) and batch["action_is_pad"].dtype == torch.bool
    assert_batch_matches_lerobot(batch, reference, index.tolist(), [IMAGE])
    assert set(batch["task"]) == {"pick up the cube"}


def test_chunks_near_an_episode_end_are_padded_like_lerobot(demos):
    mem, reference, _ = demos
    ends = [int(e) for e in reference.meta.episodes["dataset_to_index"]]  # exclusive end of each episode
    # 3 and 1 frames before the first episode's end, its last frame, the next episode's first frame,
    # the last frame of the dataset; in a shuffled order, with a repeat, as a sampler would give.
    index = [ends[0] - 4, len(mem) - 1, ends[0] - 1, ends[0], ends[0] - 2, ends[0] - 1]
    batch = mem.batch(torch.tensor(index))
    assert_batch_matches_lerobot(batch, reference, index, [IMAGE])
    assert batch["action_is_pad"].sum(dim=1).tolist() == [6, 9, 9, 0, 8, 9]
    # Padded steps repeat the episode's last action (not the next episode's first).
    assert torch.equal(batch["action"][2], mem.action[ends[0] - 1].expand(10, 6))
    assert not torch.equal(batch["action"][2, -1], mem.action[ends[0]])


def test_stats_and_metadata_are_lerobots(demos):
    mem, reference, _ = demos
    assert mem.meta.repo_id == reference.meta.repo_id and mem.chunk_size == 10
    for key in ("observation.state", "action"):
        np.testing.assert_array_equal(np.asarray(mem.stats[key]["mean"]), np.asarray(reference.meta.stats[key]["mean"]))


@pytest.fixture(scope="module")
def multi_task_images(tmp_path_factory):
    """3 short episodes of random images, two tasks in the order b, a, b, every value distinct."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = tmp_path_factory.mktemp("multi_task") / "dataset"
    features = {
        IMAGE: {"dtype": "image", "shape": (8, 8, 3), "names": ["height", "width", "channels"]},
        "observation.images.wrist": {"dtype": "image", "shape": (8, 8, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (2,), "names": ["a", "b"]},
        "action": {"dtype": "float32", "shape": (3,), "names": ["x", "y", "z"]},
    }
    ds = LeRobotDataset.create("local/multi_task", fps=10, features=features, root=root, use_videos=False)
    rng = np.random.default_rng(0)
    written = []  # the front camera's pixels, (H, W, 3) uint8 per frame
    frame = 0
    for length, task in ((3, "task b"), (5, "task a"), (2, "task b")):
        for _ in range(length):
            written.append(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
            ds.add_frame(
                {
                    IMAGE: written[-1],
                    "observation.images.wrist": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
                    "observation.state": np.array([frame, -frame], np.float32) + 0.25,
                    "action": np.array([frame, frame + 0.5, -frame], np.float32) / 3,
                    "task": task,
                }
            )
            frame += 1
        ds.save_episode()
    ds.finalize()
    return "local/multi_task", root, np.stack(written)


def test_several_tasks_and_cameras_match_lerobot(multi_task_images):
    repo_id, root, written = multi_task_images
    mem = InMemoryDemos(repo_id, root, chunk_size=4)
    reference = lerobot_reference(repo_id, root, 4)
    assert len(mem) == len(reference) == 10
    assert sorted(mem.image_keys) == sorted([IMAGE, "observation.images.wrist"])
    index = torch.arange(10).flip(0)
    batch = mem.batch(index)
    assert_batch_matches_lerobot(batch, reference, index.tolist(), mem.image_keys)
    # PNG is lossless: the images are the written pixels / 255, to float precision.
    pixels = torch.from_numpy(written[index.numpy()]).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(batch[IMAGE], pixels, atol=1e-7, rtol=0)
    assert batch["task"] == ["task b"] * 2 + ["task a"] * 5 + ["task b"] * 3
    assert batch["action_is_pad"].sum(dim=1).tolist() == [3, 2, 3, 2, 1, 0, 0, 3, 2, 1]


def test_a_dataset_with_a_video_feature_is_refused(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = tmp_path / "video_dataset"
    features = {
        IMAGE: {"dtype": "video", "shape": (64, 64, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (2,), "names": ["a", "b"]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["a", "b"]},
    }
    ds = LeRobotDataset.create(
        "local/video", fps=10, features=features, root=root, use_videos=True, video_backend="pyav"
    )
    for t in range(3):
        ds.add_frame(
            {
                IMAGE: np.full((64, 64, 3), 40 * t, np.uint8),
                "observation.state": np.zeros(2, np.float32),
                "action": np.zeros(2, np.float32),
                "task": "t",
            }
        )
    ds.save_episode()
    ds.finalize()
    assert ds.meta.video_keys == [IMAGE] and list(root.rglob("*.mp4"))  # a real video dataset
    with pytest.raises(ValueError, match="video features are not supported by InMemoryDemos; record images instead"):
        InMemoryDemos("local/video", root, chunk_size=2)
