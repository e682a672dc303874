import torch

from tmrl_vla.csp.sigma_embedding import SigmaEmbedding
from tmrl_vla.sinusoidal import sinusoidal_frequencies


def test_zero_at_sigma_zero_for_any_weights_and_not_elsewhere():
    emb = SigmaEmbedding(dim=8, width=5)
    sigma = torch.tensor([0.0, 0.3, 1.0])
    assert torch.equal(emb(sigma), torch.zeros(3, 5))  # zero-initialised: the policy is unchanged
    with torch.no_grad():
        emb.weight.normal_()
    out = emb(sigma)
    assert torch.equal(out[0], torch.zeros(5))  # still exactly zero at sigma = 0, whatever W is
    assert out[1].abs().sum() > 0.1 and not torch.allclose(out[1], out[2])


def test_frequencies_span_periods_from_1_250_to_4_and_are_not_saved():
    emb = SigmaEmbedding(dim=8, width=3)
    assert torch.equal(emb.freqs, sinusoidal_frequencies(8, 4e-3, 4.0))
    assert set(emb.state_dict()) == {"weight"}  # adapters saved before stay loadable
