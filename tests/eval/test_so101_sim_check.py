import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("so101_sim_check", ROOT / "eval" / "so101_sim_check.py")
so101_sim_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(so101_sim_check)


def test_the_csp_runner_plays_the_adapter_at_the_fixed_sigma_with_z_zero(tiny_base_policy, tiny_adapter, monkeypatch):
    from tmrl_vla.csp.policy import CSPPolicy
    from tmrl_vla.envs.pick_cube import PickCubeConfig, PickCubeEnv

    seen = []
    real = CSPPolicy.predict_action_chunk

    def record(self, batch, *, sigma, noise, **kwargs):
        seen.append((torch.as_tensor(sigma).clone(), noise.clone(), self._fused))
        return real(self, batch, sigma=sigma, noise=noise, **kwargs)

    monkeypatch.setattr(CSPPolicy, "predict_action_chunk", record)
    run, config = so101_sim_check.csp_runner(str(tiny_base_policy), str(tiny_adapter), 0.25, n_exec=5)
    wins = run(lambda: PickCubeEnv(PickCubeConfig(episode_length=10)), 2, 2)
    assert 0 <= wins <= 2 and config.type == "smolvla"
    assert len(seen) == 2  # 2 decisions of 5 steps, each for both envs at once
    for sigma, noise, merged in seen:
        assert torch.equal(sigma, torch.full((2,), 0.25)) and not noise.any() and merged  # the adapter, merged


def test_csp_sigma_is_refused_out_of_range_and_beside_a_policy(tiny_base_policy, tiny_adapter):
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        so101_sim_check.csp_runner(str(tiny_base_policy), str(tiny_adapter), 1.5, n_exec=5)
    with pytest.raises(ValueError, match="without the adapter sigma is 0"):
        so101_sim_check.csp_runner(str(tiny_base_policy), None, 0.5, n_exec=5)
    with pytest.raises(SystemExit):
        so101_sim_check.main(["--csp-sigma", "0.1", "--policy", str(tiny_base_policy)])
    with pytest.raises(SystemExit):
        so101_sim_check.main(["--csp-sigma", "0.1", "--base-z0"])
    with pytest.raises(SystemExit):
        so101_sim_check.main(["--adapter", str(tiny_adapter)])  # an adapter needs --csp-sigma


def test_without_the_adapter_the_plain_policy_plays_z_zero_at_sigma_zero(tiny_base_policy, monkeypatch):
    from tmrl_vla.csp.policy import CSPPolicy
    from tmrl_vla.envs.pick_cube import PickCubeConfig, PickCubeEnv

    seen = []
    real = CSPPolicy.predict_action_chunk

    def record(self, batch, *, sigma, noise, **kwargs):
        seen.append((torch.as_tensor(sigma).clone(), noise.clone()))
        return real(self, batch, sigma=sigma, noise=noise, **kwargs)

    monkeypatch.setattr(CSPPolicy, "predict_action_chunk", record)
    run, _ = so101_sim_check.csp_runner(str(tiny_base_policy), None, 0.0, n_exec=5)
    run(lambda: PickCubeEnv(PickCubeConfig(episode_length=5)), 1, 1)
    ((sigma, noise),) = seen  # one decision of the 5-step episode
    assert not sigma.any() and not noise.any()
