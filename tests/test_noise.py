import pytest
import torch

from tmrl_vla.noise import alpha_bar, check_sigma, forward_noise, linear_beta_schedule, sigma_to_index


def test_schedule_end_values_match_ddpm():
    assert abs(linear_beta_schedule(1000)[-1].item() - 4.04e-5) < 0.2e-5
    assert abs(linear_beta_schedule(100)[-1].item() - 0.364) < 0.002
    s = linear_beta_schedule(1000)
    assert (s[1:] < s[:-1]).all()


def test_sigma_maps_to_index_and_zero_is_exactly_clean():
    s = linear_beta_schedule(1000)
    assert sigma_to_index(torch.tensor([0.0, 0.5, 1.0]), 1000).tolist() == [0, 500, 999]
    abar = alpha_bar(torch.tensor([0.0, 1.0]), s)
    assert abar[0].item() == 1.0 and abar[1].item() < 1e-4


def test_forward_noise_respects_sigma_zero_and_mask():
    torch.manual_seed(0)
    c, eps = torch.randn(3, 4, 8), torch.randn(3, 4, 8)
    mask = torch.tensor([[1, 1, 0, 0]] * 3, dtype=torch.bool)
    out = forward_noise(c, torch.tensor([0.0, 0.5, 1.0]), linear_beta_schedule(1000), eps, mask)
    assert torch.equal(out[0], c[0])  # sigma = 0: bit-identical
    assert torch.equal(out[:, 2:], c[:, 2:])  # unmasked tokens untouched
    assert not torch.equal(out[1, :2], c[1, :2])
    torch.testing.assert_close(out[2, :2], eps[2, :2], atol=0.02, rtol=0)  # sigma = 1: (almost) pure noise


def test_bad_sigma_and_noise_shapes():
    c = torch.zeros(2, 3, 4)
    s = linear_beta_schedule(10)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        forward_noise(c, torch.tensor([0.0, 1.5]), s, torch.zeros_like(c))
    with pytest.raises(ValueError, match="shape"):
        forward_noise(c, torch.tensor([0.5]), s, torch.zeros_like(c))
    with pytest.raises(ValueError, match="context noise"):
        forward_noise(c, torch.tensor([0.5, 0.5]), s, torch.zeros(2, 3, 5))
    with pytest.raises(ValueError):
        check_sigma(torch.tensor([[0.1]]))
