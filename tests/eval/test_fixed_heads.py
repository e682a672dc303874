import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("fixed_heads", ROOT / "eval" / "fixed_heads.py")
fixed_heads = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fixed_heads)


def test_fixed_heads_answer_every_observation_alike():
    heads = fixed_heads.FixedHeads({"z": torch.tensor([[0.5, -0.5]]), "y": torch.tensor([[0.0]])})
    actions, log_probs = heads.sample(torch.randn(3, 7))
    assert actions["z"].shape == (3, 2) and torch.equal(actions["z"][2], torch.tensor([0.5, -0.5]))
    assert log_probs == {}


def test_only_each_envs_first_episode_counts(tiny_base_policy, monkeypatch):
    from tmrl_vla.csp.config import CSPConfig
    from tmrl_vla.csp.policy import CSPPolicy
    from tmrl_vla.envs.pick_cube import PickCubeConfig, PickCubeEnv
    from tmrl_vla.policies import load_lerobot_policy

    real_step = PickCubeEnv.step

    def step(self, action):  # env episodes succeed at their 2nd step: many episodes finish per env
        obs, r, term, trunc, info = real_step(self, action)
        if self._t >= 2:
            return obs, 1.0, True, False, {"is_success": True}
        return obs, r, term, trunc, info

    monkeypatch.setattr(PickCubeEnv, "step", step)
    policy, pre, post = load_lerobot_policy(tiny_base_policy)
    csp = CSPPolicy.from_base(policy, CSPConfig(noise_scale="none"))
    from tmrl_vla.envs.batched import BatchedEnv

    envs = BatchedEnv(lambda: PickCubeEnv(PickCubeConfig(episode_length=6)), 3)
    wins, n = fixed_heads.score(csp, pre, post, envs, {"z": torch.zeros(1, 6)}, seed=0, n_exec=5)
    envs.close()
    assert (wins, n) == (3, 3)


def test_end_to_end_on_the_tiny_policy(tiny_base_policy, tiny_adapter, tmp_path, capsys):
    args = [
        "--policy",
        str(tiny_base_policy),
        "--adapter",
        str(tiny_adapter),
        "--settings",
        "3",
        "--episodes",
        "2",
        "--recheck",
        "2",
        "--episode-length",
        "6",
        "--out",
        str(tmp_path / "out"),
    ]
    fixed_heads.main(args)
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last) == {"tmrl", "dsrl"}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (tmp_path / "out" / "fixed_heads.png").exists()
    for agent in ("tmrl", "dsrl"):
        rows = summary[agent]["rows"]
        assert len(rows) == 3 and rows[0]["z"] == [0.0] * 6  # the first setting is z = 0
        assert all(0.0 <= r["success"] <= 1.0 for r in rows)
        assert sum("recheck_success" in r for r in rows) == 3
    assert all(r["sigma"] == 0.0 for r in summary["dsrl"]["rows"])  # DSRL: the plain policy, sigma 0
    assert len({r["sigma"] for r in summary["tmrl"]["rows"]}) == 3
