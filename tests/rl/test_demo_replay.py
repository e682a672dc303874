"""Demonstrations in the replay: decision frames, rewards, latent matching, rows, and the trainer's use."""

import json
from types import SimpleNamespace

import pytest
import torch

from tmrl_vla.rl.config import DemoReplayConfig
from tmrl_vla.rl.demos import check_demo_features, decision_frames, demo_replay, demo_rewards, match_latents


def test_decision_frames_cover_an_episode_in_chunks_of_n_exec():
    assert decision_frames(10, 22, 5) == [(10, 5), (15, 5), (20, 2)]
    assert decision_frames(0, 5, 5) == [(0, 5)]


def test_demo_rewards_pay_the_last_tick_as_the_success():
    assert demo_rewards([5, 5, 2], 0.0, 1.0) == [0.0, 0.0, 1.0]  # the pick task: 1 on success
    assert demo_rewards([5, 5, 2], -1.0, 0.0) == [-5.0, -5.0, -1.0]  # a robot: -1 per tick, 0 on success


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="fraction"):
        DemoReplayConfig(repo_id="x", fraction=1.0)
    with pytest.raises(ValueError, match="candidates"):
        DemoReplayConfig(repo_id="x", candidates=0)
    with pytest.raises(ValueError, match="repo_id"):
        DemoReplayConfig(root="somewhere")
    assert not DemoReplayConfig().enabled and DemoReplayConfig(repo_id="x").enabled


def test_missing_camera_names_both_sides(tiny_demos):
    from tmrl_vla.rl.demos import load_demo_dataset

    config, root, _ = tiny_demos
    dataset = load_demo_dataset(DemoReplayConfig(repo_id=config.repo_id, root=str(root)))
    policy = SimpleNamespace(
        image_features={"observation.images.wrist": None}, action_feature=SimpleNamespace(shape=(6,))
    )
    with pytest.raises(KeyError, match=r"observation\.images\.wrist.*the dataset has.*observation\.images\.front"):
        check_demo_features(dataset, policy)
    policy = SimpleNamespace(
        image_features={"observation.images.front": None}, action_feature=SimpleNamespace(shape=(7,))
    )
    with pytest.raises(ValueError, match="6 dimensions but the policy's have 7"):
        check_demo_features(dataset, policy)


def _steering(base_policy, **agent):
    from tmrl_vla.csp.config import CSPConfig
    from tmrl_vla.csp.policy import CSPPolicy
    from tmrl_vla.policies import load_lerobot_policy
    from tmrl_vla.rl.config import AgentConfig, ObservationConfig
    from tmrl_vla.rl.evaluation import Steering

    policy, pre, post = load_lerobot_policy(base_policy)
    csp = CSPPolicy.from_base(policy, CSPConfig(noise_scale="none"))
    return Steering(csp, None, pre, post, AgentConfig(**agent), ObservationConfig(image_grid=2))


def test_match_latents_finds_the_candidate_that_made_the_chunk(tiny_base_policy, tiny_demos):
    from tmrl_vla.rl.decision import latent_to_noise
    from tmrl_vla.rl.demos import _frames, load_demo_dataset
    from tmrl_vla.rl.observation import encode

    steering = _steering(tiny_base_policy)
    config, root, _ = tiny_demos
    dataset = load_demo_dataset(DemoReplayConfig(repo_id=config.repo_id, root=str(root)))
    csp, c = steering.csp, steering.csp.base_policy.config
    batch = steering.preprocessor(_frames(dataset, [0, 7], [*c.image_features, "observation.state"]))
    prefix, _ = encode(csp, batch, 2)
    candidates = torch.cat([torch.zeros(1, 6), torch.rand(15, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1])
    truth = candidates[[5, 11]]
    with torch.no_grad():
        noise = latent_to_noise(truth, c.chunk_size, c.max_action_dim, 1.0)
        targets = steering.postprocessor(csp.predict_action_chunk(batch, sigma=0.0, noise=noise)).float()[:, :5]
    z, rmse, rmse0 = match_latents(
        csp, batch, prefix, targets, torch.tensor([5, 3]), steering.postprocessor, z_scale=1.0,
        candidates=candidates, scale=torch.ones(6),
    )  # fmt: skip
    assert torch.equal(z, truth)
    assert rmse.max() < 1e-4 and (rmse0 > 1e-3).all()


@pytest.mark.parametrize("n_step", [1, 3])
def test_demo_rows_follow_the_episodes(tiny_base_policy, tiny_demos, n_step):
    config, root, stats = tiny_demos
    steering = _steering(tiny_base_policy, heads=("z", "y"))
    from tmrl_vla.rl.demos import load_demo_dataset

    episodes = load_demo_dataset(DemoReplayConfig(repo_id=config.repo_id, root=str(root))).meta.episodes
    lengths = [int(n) for n in episodes["length"]]
    demos = DemoReplayConfig(repo_id=config.repo_id, root=str(root), candidates=8)
    obs_dim = 5 * steering.csp.embed_width + 6
    buffer, report = demo_replay(
        demos, steering=steering, heads={"z": 6, "y": 1}, obs_dim=obs_dim, n_step=n_step, gamma=0.5, seed=0,
        progress=False,
    )  # fmt: skip
    decisions = sum(-(-n // 5) for n in lengths)
    assert report.episodes == stats.episodes_saved and report.decisions == decisions == len(buffer)
    n = len(buffer)
    # every row of an episode's last n_step decisions ends it (done), the others bootstrap
    ends = buffer.done[:n].bool()
    expected_done = sum(min(n_step, -(-k // 5)) for k in lengths)
    assert int(ends.sum()) == expected_done
    assert torch.allclose(buffer.reward[:n][ends], 0.5 ** (buffer.steps[:n][ends] - 1))  # 1 at the end, discounted
    assert (buffer.reward[:n][~ends] == 0).all() and (buffer.steps[:n][~ends] == n_step).all()
    assert (buffer.actions["y"][:n] == -1).all() and buffer.actions["z"][:n].abs().max() <= 1
    assert 0 <= report.rmse_matched <= report.rmse_zero  # z = 0 is among the candidates


def test_demo_rows_observe_what_the_agent_would(tiny_base_policy, tiny_demos):
    """The first row's observation is the frame's encoding as a collector would make it from the env."""
    from tmrl_vla.rl.demos import _frames, load_demo_dataset
    from tmrl_vla.rl.observation import encode

    config, root, _ = tiny_demos
    steering = _steering(tiny_base_policy)
    demos = DemoReplayConfig(repo_id=config.repo_id, root=str(root), candidates=4, episodes=[1])
    buffer, report = demo_replay(
        demos, steering=steering, heads={"z": 6}, obs_dim=5 * 96 + 6, n_step=1, gamma=0.9, seed=0, progress=False
    )
    dataset = load_demo_dataset(demos)
    first = int(dataset.meta.episodes["dataset_from_index"][1])
    c = steering.csp.base_policy.config
    batch = steering.preprocessor(_frames(dataset, [first], [*c.image_features, "observation.state"]))
    assert torch.allclose(buffer.obs[0], encode(steering.csp, batch, 2)[1][0], atol=1e-5)
    assert report.episodes == 1
    with pytest.raises(ValueError, match=r"episodes \[99\]"):
        demo_replay(
            DemoReplayConfig(repo_id=config.repo_id, root=str(root), episodes=[99]), steering=steering,
            heads={"z": 6}, obs_dim=486, n_step=1, gamma=0.9, seed=0, progress=False,
        )  # fmt: skip


def test_video_demonstrations_enter_the_replay(tiny_base_policy, tiny_video_demos):
    config, root, stats = tiny_video_demos
    demos = DemoReplayConfig(repo_id=config.repo_id, root=str(root), candidates=4)
    buffer, report = demo_replay(
        demos, steering=_steering(tiny_base_policy), heads={"z": 6}, obs_dim=486, n_step=1, gamma=0.9, seed=0,
        progress=False,
    )  # fmt: skip
    assert report.episodes == stats.episodes_saved and len(buffer) == report.decisions > 0


def test_trainer_samples_the_demonstrations(tiny_base_policy, tiny_demos, tmp_path):
    from conftest import make_tiny_trainer

    from tmrl_vla.rl.replay import MixedReplay

    config, root, _ = tiny_demos
    demos = DemoReplayConfig(repo_id=config.repo_id, root=str(root), candidates=4, fraction=0.25)
    trainer = make_tiny_trainer(tiny_base_policy, tmp_path / "run", log=lambda _: None, demos=demos)
    try:
        assert isinstance(trainer.sampler, MixedReplay) and trainer.sampler.fraction == 0.25
        assert len(trainer.demo_replay) > 0
        report = json.loads((tmp_path / "run" / "demos.json").read_text())
        assert report["rows"] == len(trainer.demo_replay)
        trainer.train()  # the updates draw from both buffers
        batch = trainer.sampler.sample(8, torch.Generator().manual_seed(0))
        from_demos = (batch["action/y"] == -1).all(-1) & (batch["action/eps_c"] == 0).all(-1)  # sigma 0 exactly
        assert from_demos.tolist() == [False] * 6 + [True] * 2  # a quarter of every batch
    finally:
        trainer.close()


def test_a_robots_units_are_converted_to_the_policys(tiny_base_policy, tiny_demos):
    """lerobot-record stores a robot's own units; the env's to_policy maps state and actions."""
    from tmrl_vla.rl.demos import _frames, load_demo_dataset

    config, root, _ = tiny_demos
    steering = _steering(tiny_base_policy)
    demos = DemoReplayConfig(repo_id=config.repo_id, root=str(root), candidates=4, episodes=[0])
    dataset = load_demo_dataset(demos)
    keys = ["observation.images.front", "observation.state"]
    raw = _frames(dataset, [0, 3], keys)["observation.state"]
    assert torch.allclose(_frames(dataset, [0, 3], keys, lambda j: j * 2.0 + 1.0)["observation.state"], raw * 2 + 1)

    common = dict(steering=steering, heads={"z": 6}, obs_dim=486, n_step=1, gamma=0.9, seed=0, progress=False)
    plain, _ = demo_replay(demos, **common)
    converted, report = demo_replay(demos, to_policy=lambda j: j * 2.0 + 1.0, **common)
    n = len(plain)
    assert torch.equal(plain.obs[:n, :-6], converted.obs[:n, :-6])  # the cameras' features are the same
    assert not torch.allclose(plain.obs[:n, -6:], converted.obs[:n, -6:])  # the state is the converted one
    assert report.rmse_zero > 0
