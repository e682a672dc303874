import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "eval" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compare = load_script("compare_tmrl_dsrl")


def result(agent, seed, reached, total=400):
    return {
        "agent": agent,
        "seed": seed,
        "episodes_to_threshold": reached,
        "total_episodes": total,
        "final_success_recent": 0.5,
        "training_success_rate": 0.25,
        "final_eval_success": 0.5,
    }


def test_summary_ratio_and_interval():
    results = [result("tmrl", s, e) for s, e in enumerate([100, 120, 80])]
    results += [result("dsrl", s, e) for s, e in enumerate([300, 360, 240])]
    s = compare.summarise(results, 0.8)
    assert s["tmrl_episodes_to_80"] == 100 and s["dsrl_episodes_to_80"] == 300
    assert s["ratio"] == pytest.approx(1 / 3)
    lo, hi = s["ratio_ci95"]
    assert lo <= 1 / 3 <= hi and hi < 1  # the seeds do not overlap: the interval excludes 1
    assert s["seeds"] == 3 and "note" not in s
    assert s["tmrl_training_success_rate"] == pytest.approx(0.25)


def test_runs_that_never_reach_the_threshold_are_censored_lower_bounds():
    results = [result("tmrl", 0, 100), result("tmrl", 1, 140), result("dsrl", 0, None), result("dsrl", 1, None)]
    s = compare.summarise(results, 0.8)
    assert s["dsrl_censored"] == 2 and s["dsrl_episodes_to_80"] == 400  # counted at their total episodes
    assert "lower bounds" in s["note"]
    # DSRL's episodes are underestimated, so TMRL / DSRL is an upper bound
    assert s["ratio_bound"] == "upper" and "upper bound" in s["note"]


@pytest.mark.parametrize(
    "tmrl, dsrl, bound",
    [([100, 140], [300, 360], "exact"), ([None, 140], [300, 360], "lower"), ([None, 140], [None, 360], "none")],
)
def test_ratio_bound_follows_which_agent_is_censored(tmrl, dsrl, bound):
    results = [result("tmrl", s, e) for s, e in enumerate(tmrl)] + [result("dsrl", s, e) for s, e in enumerate(dsrl)]
    s = compare.summarise(results, 0.8)
    assert s["ratio_bound"] == bound
    assert ("note" in s) == (bound != "exact")


def test_tiny_comparison_end_to_end(tiny_base_policy, tiny_adapter, tmp_path, capsys):
    args = [
        "--policy",
        str(tiny_base_policy),
        "--adapter",
        str(tiny_adapter),
        "--seeds",
        "2",
        "--decisions",
        "2",
        "--jobs",
        "1",
        "--tiny",
        "--num-envs",
        "2",
        "--episode-length",
        "6",
        "--out",
        str(tmp_path / "cmp"),
        "--rl.image_grid=1",  # the preset pools on a 2 x 2 grid
    ]
    compare.main(args)
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last) >= {"tmrl_episodes_to_80", "dsrl_episodes_to_80", "ratio", "ratio_ci95", "seeds"}
    assert last["seeds"] == 2 and not math.isnan(last["ratio"])
    assert (tmp_path / "cmp" / "curves.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "cmp" / "tmrl" / "seed0" / "checkpoints" / f"{2:08d}" / "config.json").read_text())
    assert saved["image_grid"] == 1  # the pass-through override reached the runs
    for agent in ("tmrl", "dsrl"):
        for seed in (0, 1):
            rows = (tmp_path / "cmp" / agent / f"seed{seed}" / "metrics.jsonl").read_text().splitlines()
            assert len(rows) == 2
    compare.main(args)  # finished runs are read back, not trained again
    assert capsys.readouterr().out.strip().splitlines()[-1] == json.dumps(last)


def test_extend_unreached_continues_only_runs_below_the_threshold(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import tmrl_vla.finetune

    def rows(rates):
        return [
            {
                "decision": 10 * (i + 1),
                "rollout/episodes": 20 * (i + 1),
                "rollout/success_recent": r,
                "rollout/successes": 5 * (i + 1),
            }
            for i, r in enumerate(rates)
        ]

    runs = {"reached": rows([0.2, 0.85, 0.6]), "below": rows([0.2, 0.5, 0.7])}
    for name, metrics in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in metrics))
    continued = []

    def fake_run_rl(cfg, policy, adapter, run_dir, log):
        continued.append(Path(run_dir).name)
        extra = {
            "decision": cfg.rl.total_decisions,
            "rollout/episodes": 100,
            "rollout/success_recent": 0.75,
            "rollout/successes": 40,
        }
        with open(Path(run_dir) / "metrics.jsonl", "a") as f:
            f.write("\n" + json.dumps(extra))

    monkeypatch.setattr(tmrl_vla.finetune, "run_rl", fake_run_rl)
    cfg = SimpleNamespace(rl=SimpleNamespace(total_decisions=50, success_window=10, agent="dsrl", seed=0))

    def job(name, extend, report=False):
        return {
            "cfg": cfg,
            "run_dir": str(tmp_path / name),
            "policy": None,
            "adapter": None,
            "threshold": 0.8,
            "measure": "training",
            "extend_unreached": extend,
            "report": report,
        }

    out = {name: compare.run_one(job(name, True)) for name in runs}
    assert continued == ["below"]  # the run that reached 80% keeps its length
    assert out["reached"]["episodes_to_threshold"] == 40 and out["reached"]["decisions"] == 30
    assert out["below"]["episodes_to_threshold"] is None and out["below"]["decisions"] == 50
    compare.run_one(job("reached", False))  # without the flag every run goes to --decisions
    assert continued == ["below", "reached"]
    # --report trains nothing, whatever the runs' lengths, and refuses a run that does not exist
    reported = compare.run_one(job("reached", True, report=True))
    assert continued == ["below", "reached"] and reported["decisions"] == 50
    with pytest.raises(FileNotFoundError, match="--report"):
        compare.run_one(job("missing", False, report=True))


def test_report_summarises_existing_runs_without_building_or_training(tmp_path, monkeypatch, capsys):
    import tmrl_vla.assets
    import tmrl_vla.finetune

    def refuse(*args, **kwargs):
        raise AssertionError("a report must neither build assets nor train")

    monkeypatch.setattr(tmrl_vla.assets, "build_default_assets", refuse)
    monkeypatch.setattr(tmrl_vla.finetune, "run_rl", refuse)
    for agent, rates in (("tmrl", [0.5, 0.9]), ("dsrl", [0.3, 0.5, 0.6])):
        run = tmp_path / "cmp" / agent / "seed0"
        run.mkdir(parents=True)
        rows = [
            {
                "decision": 100 * (i + 1),
                "rollout/episodes": 60 * (i + 1),
                "rollout/success_recent": r,
                "rollout/successes": 20 * (i + 1),
                "eval/success_rate": r,
            }
            for i, r in enumerate(rates)
        ]
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = str(tmp_path / "cmp")
    compare.main(["--report", "--seeds", "1", "--measure", "training", "--out", out, "--cache-dir", str(tmp_path)])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["tmrl_episodes_to_80"] == 120 and last["dsrl_censored"] == 1 and last["dsrl_episodes_to_80"] == 180
    assert last["decisions_per_run"] == [200, 300] and last["ratio_bound"] == "upper"
