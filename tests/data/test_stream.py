"""StreamedDemos: LeRobot's own dataset and sampler, against the in-memory path and across resumes."""

import itertools

import pytest
import torch
from lerobot.configs.default import DatasetConfig

from tmrl_vla.data.memory import InMemoryDemos
from tmrl_vla.data.stream import LoaderConfig, StreamedDemos
from tmrl_vla.models.tiny_smolvla import make_tiny_smolvla

CHUNK = 10


def streamed(demos, *, batch_size=4, num_workers=0, seed=0) -> StreamedDemos:
    config, root, _ = demos
    policy_config = make_tiny_smolvla().config  # chunk_size 10: action chunks of 10 from delta_timestamps
    loader = LoaderConfig(batch_size=batch_size, num_workers=num_workers, seed=seed)
    dataset = DatasetConfig(repo_id=config.repo_id, root=str(root), video_backend="pyav")
    return StreamedDemos(dataset, policy_config, loader)


def assert_same_batch(got: dict, want: dict, image_atol: float = 0.0) -> None:
    for key in ("observation.state", "action", "action_is_pad"):
        assert torch.equal(got[key], want[key]), key
    assert got["task"] == want["task"]
    images = [k for k in want if k.startswith("observation.images.")]
    assert images
    for key in images:
        assert got[key].dtype == torch.float32 and got[key].shape == want[key].shape
        assert (got[key] - want[key]).abs().mean() <= image_atol, key


def test_streamed_batches_equal_the_in_memory_ones_on_the_same_frames(tiny_demos):
    config, root, _ = tiny_demos
    memory = InMemoryDemos(config.repo_id, root, chunk_size=CHUNK)
    stream = streamed(tiny_demos)
    # first frames, frames near an episode's end (padded chunks) and the very last frame
    index = torch.tensor([0, 5, len(memory) - 3, len(memory) - 1])
    assert memory.batch(index)["action_is_pad"].any()
    assert_same_batch(stream.batch(index), memory.batch(index))


def test_video_frames_decode_to_the_recorded_images_within_tolerance(tiny_demos, tiny_video_demos):
    config, root, _ = tiny_demos
    memory = InMemoryDemos(config.repo_id, root, chunk_size=CHUNK)
    video = streamed(tiny_video_demos)
    assert video.meta.video_keys == video.image_keys
    index = torch.tensor([0, 17, len(memory) - 1])
    # AV1 at 64 x 64 is lossy: measured mean error ~0.01 of the [0, 1] range
    assert_same_batch(video.batch(index), memory.batch(index), image_atol=0.03)


def test_in_memory_refuses_video(tiny_video_demos):
    config, root, _ = tiny_video_demos
    with pytest.raises(ValueError, match="video features are not supported by InMemoryDemos"):
        InMemoryDemos(config.repo_id, root, chunk_size=CHUNK)


def first_batches(stream: StreamedDemos, start_step: int, n: int) -> list[dict]:
    return list(itertools.islice(stream.batches(start_step=start_step, num_processes=1, prepare=lambda d: d), n))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_resume_where_an_uninterrupted_run_would_be(tiny_demos, num_workers):
    stream = streamed(tiny_demos, batch_size=16, num_workers=num_workers)
    epoch = -(-len(stream) // 16)  # batches per epoch (the last one short)
    straight = first_batches(stream, 0, epoch + 3)  # into the second epoch
    resumed = first_batches(streamed(tiny_demos, batch_size=16, num_workers=num_workers), epoch - 1, 4)
    for got, want in zip(resumed, straight[epoch - 1 :], strict=True):
        assert torch.equal(got["index"], want["index"])
    covered = torch.cat([b["index"] for b in straight[:epoch]])
    assert sorted(covered.tolist()) == list(range(len(stream)))  # each epoch reads every frame once


def test_another_seed_reads_another_order(tiny_demos):
    a = first_batches(streamed(tiny_demos, seed=0), 0, 1)[0]["index"]
    b = first_batches(streamed(tiny_demos, seed=1), 0, 1)[0]["index"]
    assert not torch.equal(a, b)


def test_lerobots_image_transforms_apply_to_streamed_batches(tiny_demos):
    from lerobot.transforms import ImageTransformsConfig

    config, root, _ = tiny_demos
    transforms = ImageTransformsConfig(enable=True, max_num_transforms=3, random_order=False)
    dataset = DatasetConfig(repo_id=config.repo_id, root=str(root), video_backend="pyav", image_transforms=transforms)
    policy_config = make_tiny_smolvla().config
    augmented = StreamedDemos(dataset, policy_config, LoaderConfig(batch_size=4, num_workers=0, seed=0))
    plain = streamed(tiny_demos)
    index = torch.tensor([0, 9, 40])
    torch.manual_seed(0)
    got, want = augmented.batch(index), plain.batch(index)
    key = "observation.images.front"
    assert got[key].shape == want[key].shape and not torch.equal(got[key], want[key])
    assert torch.equal(got["action"], want["action"])


@pytest.mark.parametrize("reader", ["memory", "stream"])
def test_an_absent_dataset_says_where_it_was_looked_for(tmp_path, monkeypatch, reader):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    root = tmp_path / "nothing_here"
    with pytest.raises(FileNotFoundError, match=f"No LeRobot dataset 'someone/absent' at {root}.*--dataset.root="):
        if reader == "memory":
            InMemoryDemos("someone/absent", root, chunk_size=CHUNK)
        else:
            StreamedDemos(DatasetConfig(repo_id="someone/absent", root=str(root)), make_tiny_smolvla().config, None)
