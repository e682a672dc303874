import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("start_spread", ROOT / "eval" / "start_spread.py")
start_spread = importlib.util.module_from_spec(spec)
spec.loader.exec_module(start_spread)


def test_every_start_and_the_base_meet_the_same_initial_states(
    tiny_base_policy, tiny_adapter, tmp_path, capsys, monkeypatch
):
    from tmrl_vla.envs.pick_cube import PickCubeEnv

    real_reset, real_step = PickCubeEnv.reset, PickCubeEnv.step

    def reset(self, *, seed=None, options=None):
        self.test_seed = seed
        return real_reset(self, seed=seed, options=options)

    def step(self, action):  # only the episodes from seeds 100, 101 and 102 succeed, at their 2nd step
        obs, r, term, trunc, info = real_step(self, action)
        if self.test_seed in (100, 101, 102) and self._t >= 2:
            return obs, 1.0, True, False, {"is_success": True}
        return obs, 0.0, False, trunc, {**info, "is_success": False}

    monkeypatch.setattr(PickCubeEnv, "reset", reset)
    monkeypatch.setattr(PickCubeEnv, "step", step)
    out = tmp_path / "out"
    args = ["--policy", str(tiny_base_policy), "--adapter", str(tiny_adapter), "--stds", "0.1,1.0", "--episodes", "5"]
    args += ["--num-envs", "2", "--seed", "100", "--episode-length", "6", "--out", str(out)]
    start_spread.main(args)
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # seeds 100-104, whatever the policy: 3 of 5 for the base and for each of the 2 x 2 x 2 starts;
    # another set of five seeds (an off-by-one, a per-episode seed stream) would score 2 or fewer
    start = {"0.1": 0.6, "1.0": 0.6}
    expected = {"base": 0.6, **{kind: {"episode": start, "decision": start} for kind in ("tmrl", "dsrl")}}
    assert last == expected
    summary = json.loads((out / "summary.json").read_text())
    assert summary["success_rate"] == expected and summary["successes"]["base"] == 3
    assert summary["shift"] == "none" and summary["init_sigma"] == 0.05 and summary["episodes"] == 5
    assert (out / "start_spread.png").stat().st_size > 0


def test_unknown_agents_or_explorations_are_refused(capsys):
    import pytest

    for flag, value in (("--agents", "tmrl,sac"), ("--explorations", "chunk")):
        with pytest.raises(SystemExit):
            start_spread.main([flag, value])
        assert value.split(",")[-1] in capsys.readouterr().err
