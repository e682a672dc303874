import pytest
import torch

from tmrl_vla.rl.replay import ReplayBuffer


def fill(buf, n, start=0):
    obs = torch.arange(start, start + n).float()[:, None].expand(n, 3)
    buf.add(obs, {"z": obs[:, :2]}, torch.ones(n), torch.zeros(n), obs + 1)


def test_wraps_and_samples_within_size():
    buf = ReplayBuffer(5, 3, {"z": 2})
    fill(buf, 3)
    assert len(buf) == 3 and buf.ptr == 3
    fill(buf, 4, start=3)  # 7 added into 5 slots
    assert len(buf) == 5 and buf.total_added == 7 and buf.ptr == 2
    assert sorted(buf.obs[:, 0].tolist()) == [2, 3, 4, 5, 6]
    batch = buf.sample(16, torch.Generator().manual_seed(0))
    assert batch["obs"].shape == (16, 3) and batch["action/z"].shape == (16, 2)
    torch.testing.assert_close(batch["next_obs"], batch["obs"] + 1)


def test_save_load_round_trip(tmp_path):
    buf = ReplayBuffer(8, 3, {"z": 2})
    fill(buf, 5)
    buf.save(tmp_path / "replay.safetensors")
    other = ReplayBuffer(8, 3, {"z": 2})
    other.load(tmp_path / "replay.safetensors")
    assert (other.size, other.ptr, other.total_added) == (5, 5, 5)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = buf.sample(10, g1), other.sample(10, g2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError):
        ReplayBuffer(9, 3, {"z": 2}).load(tmp_path / "replay.safetensors")


def test_bad_input():
    buf = ReplayBuffer(4, 3, {"z": 2})
    with pytest.raises(RuntimeError, match="empty"):
        buf.sample(1)
    with pytest.raises(ValueError, match="heads"):
        buf.add(torch.zeros(1, 3), {"y": torch.zeros(1, 1)}, torch.zeros(1), torch.zeros(1), torch.zeros(1, 3))


def test_mixed_replay_draws_half_from_successes():
    from tmrl_vla.rl.replay import MixedReplay

    main, success = ReplayBuffer(100, 2, {"z": 1}), ReplayBuffer(100, 2, {"z": 1})
    main.add(torch.zeros(10, 2), {"z": torch.zeros(10, 1)}, torch.zeros(10), torch.zeros(10), torch.zeros(10, 2))
    mixed = MixedReplay(main, success)
    assert mixed.sample(8)["reward"].sum() == 0  # no successes yet: the main buffer alone
    success.add(torch.ones(3, 2), {"z": torch.ones(3, 1)}, torch.ones(3), torch.ones(3), torch.ones(3, 2))
    batch = mixed.sample(8)
    assert batch["obs"].shape == (8, 2) and batch["reward"].sum() == 4


def test_mixed_replay_draws_its_fraction_and_nests():
    from tmrl_vla.rl.replay import MixedReplay

    def buffer(value: float) -> ReplayBuffer:
        buf = ReplayBuffer(10, 1, {"z": 1})
        buf.add(torch.full((4, 1), value), {"z": torch.zeros(4, 1)}, torch.zeros(4), torch.zeros(4), torch.zeros(4, 1))
        return buf

    mixed = MixedReplay(MixedReplay(buffer(0.0), buffer(1.0)), buffer(2.0), fraction=0.25)
    obs = mixed.sample(16)["obs"].flatten().tolist()
    assert obs == [0.0] * 6 + [1.0] * 6 + [2.0] * 4  # a quarter of demonstrations, the rest half and half
    with pytest.raises(ValueError, match="fraction"):
        MixedReplay(buffer(0.0), buffer(1.0), fraction=0.0)
