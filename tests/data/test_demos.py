import pytest
import torch

from tmrl_vla.data.demos import DemoConfig, load_demos, record_demos
from tmrl_vla.data.memory import InMemoryDemos


def test_expert_demos_recorded(tiny_demos):
    _, _, stats = tiny_demos
    assert stats.episodes_saved == 4 and stats.expert_success_rate == 1.0
    assert stats.frames > 4 * 20


def test_round_trip_with_action_chunks_offline(tiny_demos):
    config, root, stats = tiny_demos
    ds = load_demos(config.repo_id, root, chunk_size=10, video_backend="pyav")
    assert len(ds) == stats.frames and ds.meta.total_episodes == 4
    sample = ds[0]
    assert sample["observation.images.front"].shape == (3, 64, 64)
    assert sample["observation.state"].shape == (6,)
    assert sample["action"].shape == (10, 6) and sample["action_is_pad"].shape == (10,)
    assert sample["task"] == "pick up the cube"
    assert ds.meta.stats["action"]["mean"].shape == (6,)  # normalisation stats were computed
    assert ds.meta.features["action"]["names"][0] == "shoulder_pan.pos"


def test_in_memory_batches_match_lerobot_semantics(tiny_demos):
    config, root, _ = tiny_demos
    ds = load_demos(config.repo_id, root, chunk_size=10, video_backend="pyav")
    mem = InMemoryDemos(config.repo_id, root, chunk_size=10)
    ends = ds.meta.episodes["dataset_to_index"]
    index = torch.tensor([0, 5, int(ends[0]) - 3, int(ends[0]) - 1, int(ends[1]), len(ds) - 1])
    batch = mem.batch(index)
    for row, i in enumerate(index.tolist()):
        ref = ds[i]
        torch.testing.assert_close(batch["action"][row], ref["action"])
        assert torch.equal(batch["action_is_pad"][row], ref["action_is_pad"])
        torch.testing.assert_close(batch["observation.state"][row], ref["observation.state"])
        torch.testing.assert_close(
            batch["observation.images.front"][row], ref["observation.images.front"], atol=1 / 255, rtol=0
        )
    assert batch["action_is_pad"][3].sum() == 9  # the last frame of an episode pads the rest of its chunk
    assert batch["task"] == ["pick up the cube"] * len(index)


def test_existing_root_is_never_overwritten(tiny_demos, tmp_path):
    _, root, _ = tiny_demos
    before = sorted(p.name for p in root.rglob("*"))
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        record_demos(DemoConfig(num_episodes=1), root, progress=False)
    assert sorted(p.name for p in root.rglob("*")) == before
