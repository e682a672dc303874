import copy

import pytest
import torch

from tmrl_vla.csp.config import CSPConfig
from tmrl_vla.csp.policy import CSPPolicy
from tmrl_vla.rl.observation import encode, feature_width, prefix_feature_width


def test_grid_pooled_features_keep_where_the_mean_loses(tiny_policy_and_batch):
    policy, batch = tiny_policy_and_batch
    csp = CSPPolicy.from_base(copy.deepcopy(policy), CSPConfig(noise_scale="none"))
    cache, mean_features = encode(csp, dict(batch))
    _, grid_features = encode(csp, dict(batch), image_grid=2)
    d = csp.embed_width
    assert mean_features.shape[1] == prefix_feature_width(csp, 1) + 6 == 2 * d + 6
    assert grid_features.shape[1] == prefix_feature_width(csp, 2) + 6 == 5 * d + 6
    quadrants = grid_features[:, : 4 * d].view(-1, 4, d)
    torch.testing.assert_close(quadrants.mean(1), mean_features[:, :d])  # the grid's mean is the mean token
    torch.testing.assert_close(grid_features[:, 4 * d :], mean_features[:, d:])  # language and state unchanged
    with pytest.raises(ValueError, match="3 x 3 grid"):
        encode(csp, dict(batch), image_grid=3)


def test_feature_width_counts_the_state(tiny_policy_and_batch):
    policy, batch = tiny_policy_and_batch
    csp = CSPPolicy.from_base(copy.deepcopy(policy), CSPConfig(noise_scale="none"))
    _, features = encode(csp, dict(batch), image_grid=2)
    assert features.shape[1] == feature_width(csp, 6, image_grid=2) == prefix_feature_width(csp, 2) + 6
    torch.testing.assert_close(features[:, -6:], batch["observation.state"].float())  # the state comes last
