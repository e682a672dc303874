import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("fixed_heads", ROOT / "eval" / "fixed_heads.py")
fixed_heads = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fixed_heads)

from tmrl_vla.rl.analysis import FixedHeads, random_settings, score_fixed  # noqa: E402  (what the script runs)


def test_fixed_heads_answer_every_observation_alike():
    heads = FixedHeads({"z": torch.tensor([[0.5, -0.5]]), "y": torch.tensor([[0.0]])})
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
    wins, n = score_fixed(csp, pre, post, envs, {"z": torch.zeros(1, 6)}, seed=0, n_exec=5)
    envs.close()
    assert (wins, n) == (3, 3)


def test_end_to_end_on_the_tiny_policy(tiny_base_policy, tiny_adapter, tmp_path, capsys, monkeypatch):
    from tmrl_vla.envs.pick_cube import PickCubeEnv

    real_reset, real_step = PickCubeEnv.reset, PickCubeEnv.step

    def reset(self, *, seed=None, options=None):
        self.test_seed = seed
        return real_reset(self, seed=seed, options=options)

    def step(self, action):  # episodes from even seeds succeed at their 2nd step, the others never
        obs, r, term, trunc, info = real_step(self, action)
        if self.test_seed % 2 == 0 and self._t >= 2:
            return obs, 1.0, True, False, {"is_success": True}
        return obs, 0.0, False, trunc, {**info, "is_success": False}

    # Scores and rechecks run one episode per env from seeds s, s + 1 with s even: half succeed.
    monkeypatch.setattr(PickCubeEnv, "reset", reset)
    monkeypatch.setattr(PickCubeEnv, "step", step)
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
        settings = random_settings(agent, 3, 6, torch.Generator().manual_seed(0))  # the script's --seed 0
        assert [r["z"] for r in rows] == [s["z"][0].tolist() for s in settings]
        assert rows[0]["z"] == [0.0] * 6  # the first setting is z = 0
        # One of each setting's 2 episodes succeeds, and one of each recheck's 2.
        assert [r["success"] for r in rows] == [0.5] * 3
        assert [r["recheck_success"] for r in rows] == [0.5] * 3  # all 3 settings are among the best 3
        expected = {"mean_success": 0.5, "best_success": 0.5, "best_recheck_success": 0.5, "fraction_at_least_0.5": 1.0}
        assert last[agent] == expected and summary[agent] == expected | {"rows": rows}
    # TMRL's sigma is its setting's y mapped from [-1, 1] to [0, 1]
    tmrl_settings = random_settings("tmrl", 3, 6, torch.Generator().manual_seed(0))
    assert [r["sigma"] for r in summary["tmrl"]["rows"]] == [(float(s["y"]) + 1) / 2 for s in tmrl_settings]
    assert all(r["sigma"] == 0.0 for r in summary["dsrl"]["rows"])  # DSRL: the plain policy, sigma 0
    assert len({r["sigma"] for r in summary["tmrl"]["rows"]}) == 3
