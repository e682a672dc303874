import json
from pathlib import Path

import pytest

from tmrl_vla.envs.spec import EnvSpec
from tmrl_vla.rl.comparison import ComparisonRun, comparison_runs, run_or_read, summarise
from tmrl_vla.rl.config import AgentConfig, TMRLConfig


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
    s = summarise(results, 0.8)
    assert s["tmrl_episodes_to_80"] == 100 and s["dsrl_episodes_to_80"] == 300
    assert s["ratio"] == pytest.approx(1 / 3)
    lo, hi = s["ratio_ci95"]
    assert lo <= 1 / 3 <= hi and hi < 1  # the seeds do not overlap: the interval excludes 1
    assert s["seeds"] == 3 and "note" not in s
    assert s["tmrl_training_success_rate"] == pytest.approx(0.25)


def test_runs_that_never_reach_the_threshold_are_censored_lower_bounds():
    results = [result("tmrl", 0, 100), result("tmrl", 1, 140), result("dsrl", 0, None), result("dsrl", 1, None)]
    s = summarise(results, 0.8)
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
    s = summarise(results, 0.8)
    assert s["ratio_bound"] == bound
    assert ("note" in s) == (bound != "exact")


def test_extend_unreached_continues_only_runs_below_the_threshold(tmp_path, monkeypatch):
    import tmrl_vla.rl.run

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

    def fake_run_rl(cfg, *, policy, adapter, env, run_dir, resume, log):
        continued.append(Path(run_dir).name)
        extra = {
            "decision": cfg.total_decisions,
            "rollout/episodes": 100,
            "rollout/success_recent": 0.75,
            "rollout/successes": 40,
        }
        with open(Path(run_dir) / "metrics.jsonl", "a") as f:
            f.write("\n" + json.dumps(extra))

    monkeypatch.setattr(tmrl_vla.rl.run, "run_rl", fake_run_rl)
    cfg = TMRLConfig(agent=AgentConfig(kind="dsrl"), total_decisions=50, success_window=10)

    def job(name, extend, report=False):
        return ComparisonRun(
            config=cfg,
            env=EnvSpec(),
            run_dir=str(tmp_path / name),
            policy=None,
            adapter=None,
            measure="training",
            extend_unreached=extend,
            report=report,
        )

    out = {name: run_or_read(job(name, True)) for name in runs}
    assert continued == ["below"]  # the run that reached 80% keeps its length
    assert out["reached"]["episodes_to_threshold"] == 40 and out["reached"]["decisions"] == 30
    assert out["below"]["episodes_to_threshold"] is None and out["below"]["decisions"] == 50
    run_or_read(job("reached", False))  # without the flag every run goes to --decisions
    assert continued == ["below", "reached"]
    # --report trains nothing, whatever the runs' lengths, and refuses a run that does not exist
    reported = run_or_read(job("reached", True, report=True))
    assert continued == ["below", "reached"] and reported["decisions"] == 50
    with pytest.raises(FileNotFoundError, match="--report"):
        run_or_read(job("missing", False, report=True))


def test_comparison_runs_pair_both_agents_per_seed(tmp_path):
    runs = comparison_runs(TMRLConfig(seed=7), 2, tmp_path, env=EnvSpec(), policy="p", adapter="a")
    assert [(r.config.agent.kind, r.config.seed) for r in runs] == [("tmrl", 0), ("dsrl", 0), ("tmrl", 1), ("dsrl", 1)]
    assert runs[3].run_dir == str(tmp_path / "dsrl" / "seed1") and runs[3].adapter == "a"
