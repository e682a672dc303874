import torch

from tmrl_vla.rl.sac import actor_loss, anchor_loss, critic_loss, gaussian_kl, polyak_update, td_target


def test_td_target_by_hand():
    next_q = torch.tensor([[1.0, 5.0], [2.0, 4.0]])  # (N=2, b=2): min over critics -> [1, 4]
    r, done = torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(td_target(r, done, next_q, 0.9), torch.tensor([0.9, 1.0]))
    soft = td_target(r, done, next_q, 0.9, next_log_prob=torch.tensor([2.0, 2.0]), alpha=0.5)
    torch.testing.assert_close(soft, torch.tensor([0.9 * (1.0 - 1.0), 1.0]))


def test_losses():
    q = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    loss = critic_loss(q, torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(loss, torch.tensor((0 + 0 + 4 + 4) / 4))
    a = actor_loss(q, {"z": torch.tensor([1.0, 1.0])}, {"z": torch.tensor(0.5)})
    torch.testing.assert_close(a, torch.tensor(0.5 - 2.5))


def test_polyak():
    online, target = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = target.weight.detach().clone()
    polyak_update(target, online, 0.25)
    torch.testing.assert_close(target.weight, 0.75 * before + 0.25 * online.weight.detach())


def test_gaussian_kl_matches_torch_distributions_and_is_zero_only_at_the_reference():
    g = torch.Generator().manual_seed(0)
    mean, log_std = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g) * 0.5
    mean0, log_std0 = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g) * 0.5
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, log_std.exp()), torch.distributions.Normal(mean0, log_std0.exp())
    ).sum(-1)
    torch.testing.assert_close(gaussian_kl(mean, log_std, mean0, log_std0), expected)
    torch.testing.assert_close(gaussian_kl(mean0, log_std0, mean0, log_std0), torch.zeros(5))
    # summed over heads, averaged over the batch
    kl = {"z": torch.tensor([1.0, 3.0]), "y": torch.tensor([0.5, 0.5])}
    assert anchor_loss(kl).item() == 2.5
