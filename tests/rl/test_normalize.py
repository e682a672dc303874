import torch

from tmrl_vla.rl.normalize import ObservationNormalizer, mean_std, moments


def test_statistics_from_summed_moments_match_the_data():
    torch.manual_seed(0)
    a, b = torch.randn(50, 4) * 3 + 1, torch.randn(30, 4) * 3 + 1
    mean, std = mean_std(moments(a) + moments(b))  # two processes' shards added up
    both = torch.cat([a, b])
    torch.testing.assert_close(mean, both.mean(0))
    torch.testing.assert_close(std, both.std(0, unbiased=False), rtol=1e-4, atol=1e-4)


def test_constant_dimensions_become_zero_and_large_values_are_clipped():
    norm = ObservationNormalizer(3, clip=5.0)
    obs = torch.tensor([[14.8, 0.0, 2.0], [14.8, 1.0, -2.0]])
    torch.testing.assert_close(norm(obs), obs)  # unchanged until statistics are set
    norm.set_stats(*mean_std(moments(obs)))
    out = norm(obs)
    assert torch.equal(out[:, 0], torch.zeros(2))  # the constant language feature carries nothing
    torch.testing.assert_close(out[:, 1:], torch.tensor([[-1.0, 1.0], [1.0, -1.0]]))
    assert norm(torch.tensor([[14.8, 100.0, 0.0]]))[0, 1] == 5.0
    state = norm.state_dict()
    fresh = ObservationNormalizer(3, clip=5.0)
    fresh.load_state_dict(state)  # travels with the weights
    assert fresh.ready and torch.equal(fresh(obs), out)


def test_trainer_freezes_statistics_after_the_warm_up_on_every_network(tiny_base_policy, tmp_path):
    from test_tmrl_trainer import trainer

    t = trainer(tiny_base_policy, tmp_path, total_decisions=3, eval_every=100)
    t.train()
    t.close()
    a = t.agent
    assert a.actor.normalize.ready and a.critics.normalize.ready and a.target_critics.normalize.ready
    # set before the first update (decision 3, after 2 warm-up ones), from the replay at that point
    warm = t.replay.obs[: 3 * t.config.num_envs]
    torch.testing.assert_close(a.actor.normalize.mean, warm.mean(0))
    torch.testing.assert_close(a.critics.normalize.std, warm.std(0, unbiased=False).clamp_min(1e-2))
