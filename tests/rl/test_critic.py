import pytest
import torch

from tmrl_vla.rl.critic import CriticConfig, CriticEnsemble


def actions(b, cfg):
    return {
        "z": torch.rand(b, cfg.action_dim) * 2 - 1,
        "y": torch.rand(b, 1) * 2 - 1,
        "eps_c": torch.randn(b, cfg.embed_dim),
    }


def test_batched_ensemble_equals_looped_one_values_and_gradients():
    torch.manual_seed(0)
    # zero_init_output off: with a zero output layer every hidden-layer gradient would be zero too.
    cfg = CriticConfig(obs_dim=7, action_dim=6, embed_dim=20, num_critics=5, hidden=32, zero_init_output=False)
    critics = CriticEnsemble(cfg)
    obs, act = torch.randn(9, 7), actions(9, cfg)
    batched, looped = critics(obs, act), critics.forward_looped(obs, act)
    assert batched.shape == (5, 9)
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=1e-5)
    g1 = torch.autograd.grad(batched.sum(), list(critics.parameters()))
    g2 = torch.autograd.grad(critics.forward_looped(obs, act).sum(), list(critics.parameters()))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_critics_start_at_zero_and_diverge_after_one_step():
    torch.manual_seed(0)
    cfg = CriticConfig(obs_dim=3, action_dim=2, embed_dim=4, num_critics=3, hidden=16)
    critics = CriticEnsemble(cfg)
    obs, act = torch.randn(4, 3), actions(4, cfg)
    assert torch.equal(critics(obs, act), torch.zeros(3, 4))  # the value of a 0-until-success task
    opt = torch.optim.SGD(critics.parameters(), lr=0.1)
    ((critics(obs, act) - 1.0) ** 2).mean().backward()
    opt.step()
    q = critics(obs, act)
    assert (q > 0).all() and not torch.allclose(q[0], q[1])  # different hidden layers, different Qs
    random_init = CriticConfig(obs_dim=3, action_dim=2, embed_dim=4, num_critics=3, hidden=16, zero_init_output=False)
    q = CriticEnsemble(random_init)(obs, act)
    assert not torch.allclose(q[0], q[1])


def test_dsrl_critic_reads_no_sigma_or_context_noise():
    cfg = CriticConfig(obs_dim=3, action_dim=2, embed_dim=960, heads=("z",), hidden=16)
    critics = CriticEnsemble(cfg)
    assert cfg.input_dim == 5 and critics.eps_c_proj is None
    obs, z = torch.randn(4, 3), {"z": torch.rand(4, 2)}
    assert critics(obs, z).shape == (5, 4)
    with pytest.raises(KeyError):
        CriticEnsemble(CriticConfig(obs_dim=3, action_dim=2, embed_dim=4, hidden=8))(obs, z)
