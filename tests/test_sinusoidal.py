"""Sinusoidal features of sigma (tmrl_vla.sinusoidal), shared by the CSP sigma embedding and the critics."""

import math

import pytest
import torch

from tmrl_vla.sinusoidal import sinusoidal_features, sinusoidal_frequencies


def test_frequencies_have_half_the_dim_and_span_the_period_range():
    freqs = sinusoidal_frequencies(8, min_period=0.1, max_period=4.0)
    assert freqs.shape == (4,)
    torch.testing.assert_close(freqs[0], torch.tensor(2 * math.pi / 0.1))  # the shortest period first
    torch.testing.assert_close(freqs[-1], torch.tensor(2 * math.pi / 4.0))
    assert (freqs[:-1] > freqs[1:]).all()  # strictly decreasing: periods grow


def test_periods_are_log_spaced():
    freqs = sinusoidal_frequencies(6, min_period=0.01, max_period=100.0)
    periods = 2 * math.pi / freqs
    torch.testing.assert_close(periods, torch.tensor([0.01, 1.0, 100.0]))


def test_two_features_hold_one_frequency_at_the_shortest_period():
    freqs = sinusoidal_frequencies(2, min_period=0.5, max_period=3.0)
    assert freqs.shape == (1,)
    torch.testing.assert_close(freqs, torch.tensor([2 * math.pi / 0.5]))


@pytest.mark.parametrize("dim", [0, 1, 3, 7])
def test_odd_or_too_small_dims_are_refused(dim):
    with pytest.raises(ValueError, match=rf"even number >= 2, got {dim}"):
        sinusoidal_frequencies(dim, 0.1, 1.0)


def test_features_shape_and_layout_sines_then_cosines():
    freqs = sinusoidal_frequencies(6, 0.2, 5.0)
    x = torch.tensor([0.0, 0.25, 0.5, 1.0, 0.7])
    out = sinusoidal_features(x, freqs)
    assert out.shape == (5, 6) and out.dtype == torch.float32
    angles = x[:, None] * freqs[None, :]
    torch.testing.assert_close(out[:, :3], angles.sin())
    torch.testing.assert_close(out[:, 3:], angles.cos())


def test_each_sine_cosine_pair_lies_on_the_unit_circle():
    freqs = sinusoidal_frequencies(16, 0.05, 10.0)
    x = torch.rand(50, generator=torch.Generator().manual_seed(0))
    out = sinusoidal_features(x, freqs)
    torch.testing.assert_close(out[:, :8] ** 2 + out[:, 8:] ** 2, torch.ones(50, 8))


def test_zero_gives_zero_sines_and_unit_cosines():
    out = sinusoidal_features(torch.zeros(2), sinusoidal_frequencies(10, 0.1, 2.0))
    assert torch.equal(out, torch.cat([torch.zeros(2, 5), torch.ones(2, 5)], dim=-1))


def test_integer_and_double_inputs_become_float32_features():
    freqs = sinusoidal_frequencies(4, 1.0, 2.0)
    ints = sinusoidal_features(torch.tensor([0, 1]), freqs)
    doubles = sinusoidal_features(torch.tensor([0.0, 1.0], dtype=torch.float64), freqs)
    assert ints.dtype == doubles.dtype == torch.float32
    torch.testing.assert_close(ints, doubles)
    # a whole period of the shortest frequency (period 1) brings its sine back to 0 and cosine to 1
    torch.testing.assert_close(ints[1, [0, 2]], torch.tensor([0.0, 1.0]), atol=1e-6, rtol=0)


def test_different_inputs_give_different_features():
    freqs = sinusoidal_frequencies(8, 0.1, 4.0)
    out = sinusoidal_features(torch.tensor([0.3, 0.31]), freqs)
    assert not torch.allclose(out[0], out[1])
