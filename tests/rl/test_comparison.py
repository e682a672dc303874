import json
import math
from pathlib import Path

import pytest

from tmrl_vla.envs.spec import EnvSpec
from tmrl_vla.rl.comparison import (
    ComparisonRun,
    _floored_at_zero,
    archive_run,
    comparison_runs,
    geometric_mean_ratio,
    pool_shifts,
    pooled_ratio_ci,
    read_split,
    restore_archived,
    role_shifts,
    run_or_read,
    shift_summary,
    suite_summary,
    summarise,
)
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


# ------------------------------------------------------------------------------ suites of shifts

SHIFT_NAMES = ("none", "green_cube", "dim_light", "moved_camera")


def runs_at(agent, per_threshold, total=400):
    """One result per seed; ``per_threshold``: {"0.5": [episodes or None per seed], "0.8": [...]}."""
    seeds = len(next(iter(per_threshold.values())))
    return [
        result(agent, s, None, total) | {"episodes_to_each_threshold": {k: v[s] for k, v in per_threshold.items()}}
        for s in range(seeds)
    ]


def constant_shift(tmrl, dsrl, seeds=2):
    """A shift whose runs all need the same episodes per agent (at 0.8 only)."""
    return runs_at("tmrl", {"0.8": [tmrl] * seeds}) + runs_at("dsrl", {"0.8": [dsrl] * seeds})


def write_split(tmp_path, split):
    path = tmp_path / "split.json"
    path.write_text(split if isinstance(split, str) else json.dumps(split))
    return path


def test_read_split_keeps_the_files_order_and_role_all_is_tune_then_test(tmp_path):
    path = write_split(tmp_path, {"tune": ["moved_camera", "none"], "test": ["dim_light"], "notes": "fixed first"})
    split = read_split(path, SHIFT_NAMES)
    assert split == {"tune": ["moved_camera", "none"], "test": ["dim_light"]}
    assert role_shifts(split, "tune") == ["moved_camera", "none"]
    assert role_shifts(split, "all") == ["moved_camera", "none", "dim_light"]
    with pytest.raises(ValueError, match="role"):
        role_shifts(split, "train")


@pytest.mark.parametrize(
    "split, problem",
    [
        ("{not json", "cannot be read as JSON"),
        ('["moved_camera"]', "expected an object"),
        ({"tune": ["none"], "tests": ["dim_light"]}, r"unknown keys \['tests'\]"),
        ({"tune": [], "test": ["dim_light"]}, "'tune' must be a non-empty list"),
        ({"tune": ["none"]}, "'test' must be a non-empty list"),
        ({"tune": ["none"], "test": "dim_light"}, "'test' must be a non-empty list"),
        ({"tune": ["none", "none"], "test": ["dim_light"]}, "more than once"),
        ({"tune": ["none"], "test": ["fog"]}, r"unknown shifts in 'test': \['fog'\]; known: dim_light, green_cube"),
        ({"tune": ["none", "dim_light"], "test": ["dim_light"]}, r"in both 'tune' and 'test': \['dim_light'\]"),
    ],
)
def test_read_split_names_the_file_and_the_problem(tmp_path, split, problem):
    path = write_split(tmp_path, split)
    with pytest.raises(ValueError, match=problem) as error:
        read_split(path, SHIFT_NAMES)
    assert str(path) in str(error.value)


def test_read_split_refuses_a_missing_file(tmp_path):
    with pytest.raises(ValueError, match="missing.json"):
        read_split(tmp_path / "missing.json", SHIFT_NAMES)


def test_each_threshold_is_summarised_with_its_own_censoring():
    results = runs_at("tmrl", {"0.5": [40, 60], "0.8": [100, None]}) + runs_at(
        "dsrl", {"0.5": [80, 120], "0.8": [None, None]}
    )
    low, high = shift_summary(results, 0.5), shift_summary(results, 0.8)
    assert low["tmrl"]["mean_episodes"] == 50 and low["dsrl"]["mean_episodes"] == 100
    assert low["ratio"] == pytest.approx(0.5) and low["ratio_bound"] == "exact" and "note" not in low
    assert low["tmrl"]["censored"] == 0 and low["tmrl"]["runs"] == 2
    # at 0.8 censored runs count at their total episodes (400), and both agents have some
    assert high["tmrl"]["mean_episodes"] == 250 and high["dsrl"]["mean_episodes"] == 400
    assert high["tmrl"]["censored"] == 1 and high["dsrl"]["censored"] == 2
    assert high["ratio_bound"] == "none" and "bounds nothing" in high["note"]
    with pytest.raises(KeyError, match="threshold 0.7"):
        shift_summary(results, 0.7)


def test_pooled_ratio_is_the_geometric_mean_and_resamples_shifts():
    # every run of a shift needs the same episodes: all the spread is between the shifts
    per_shift = {"a": constant_shift(25, 100), "b": constant_shift(100, 100)}
    pooled = pool_shifts(per_shift, 0.8)
    assert pooled["ratio"] == pytest.approx(0.5)  # sqrt(0.25 * 1)
    # resamples of two shifts: (a, a) -> 0.25, (a, b) -> 0.5, (b, b) -> 1, each pair with chance >= 1/4
    assert pooled["ratio_ci95"] == pytest.approx([0.25, 1.0])
    assert pooled["tmrl"] == {"mean_episodes": 62.5, "censored": 0, "runs": 4}
    assert pooled["ratio_bound"] == "exact" and pooled["shifts"] == ["a", "b"]


def test_pooled_ratio_lets_no_shift_dominate_by_its_scale():
    # the pooled means (10100 / 10200) would be about 0.99, set by the slow shift alone
    small = {"fast": constant_shift(100, 200), "slow": constant_shift(10_000, 10_000)}
    assert pool_shifts(small, 0.8)["ratio"] == pytest.approx(0.5**0.5)
    # scaling one shift's episodes for both agents changes neither the ratio nor its interval
    a = {"x": runs_at("tmrl", {"0.8": [90, 110, 130]}) + runs_at("dsrl", {"0.8": [200, 260, 240]})}
    a["y"] = runs_at("tmrl", {"0.8": [50, 70, 40]}) + runs_at("dsrl", {"0.8": [60, 50, 90]})
    b = {
        "x": a["x"],
        "y": [
            r | {"episodes_to_each_threshold": {"0.8": 1000 * r["episodes_to_each_threshold"]["0.8"]}} for r in a["y"]
        ],
    }
    pa, pb = pool_shifts(a, 0.8), pool_shifts(b, 0.8)
    assert pb["ratio"] == pytest.approx(pa["ratio"]) and pb["ratio_ci95"] == pytest.approx(pa["ratio_ci95"])
    assert pa["ratio_ci95"][0] < pa["ratio"] < pa["ratio_ci95"][1]


def test_swapping_the_agents_gives_the_reciprocal_ratio_and_interval():
    per_shift = {
        "x": ([90, 110, 130], [200, 260, 240]),
        "y": ([50, 70, 40], [60, 50, 90]),
        "z": ([300, 200], [310, 420]),
    }
    swapped = {k: (b, a) for k, (a, b) in per_shift.items()}
    assert geometric_mean_ratio(swapped) == pytest.approx(1 / geometric_mean_ratio(per_shift))
    # the interval only in distribution: the same draws pair other runs once the agents swap places
    lo, hi = pooled_ratio_ci(per_shift)
    lo_swapped, hi_swapped = pooled_ratio_ci(swapped)
    assert lo_swapped == pytest.approx(1 / hi, rel=0.02) and hi_swapped == pytest.approx(1 / lo, rel=0.02)
    assert hi < 1 < lo_swapped


@pytest.mark.parametrize(
    "censored_in, bound",
    [
        ({}, "exact"),
        ({"a": ("dsrl",)}, "upper"),
        ({"a": ("dsrl",), "b": ("dsrl",)}, "upper"),
        ({"b": ("tmrl",)}, "lower"),
        ({"a": ("dsrl",), "b": ("tmrl",)}, "none"),  # each shift is a bound, but in opposite directions
        ({"a": ("tmrl", "dsrl")}, "none"),
    ],
)
def test_pooled_bound_follows_the_censored_runs_of_all_shifts(censored_in, bound):
    per_shift = {}
    for shift in ("a", "b"):
        agents = censored_in.get(shift, ())
        per_shift[shift] = runs_at("tmrl", {"0.8": [None if "tmrl" in agents else 100, 120]}) + runs_at(
            "dsrl", {"0.8": [None if "dsrl" in agents else 300, 320]}
        )
    pooled = pool_shifts(per_shift, 0.8, resamples=200)
    assert pooled["ratio_bound"] == bound
    assert ("note" in pooled) == (bound != "exact")
    counts = {agent: sum(agent in agents for agents in censored_in.values()) for agent in ("tmrl", "dsrl")}
    assert pooled["tmrl"]["censored"] == counts["tmrl"] and pooled["dsrl"]["censored"] == counts["dsrl"]


def test_one_shift_pools_to_its_own_ratio_and_one_run_has_no_interval():
    one = {"a": runs_at("tmrl", {"0.8": [100, 140, 120]}) + runs_at("dsrl", {"0.8": [300, 280, 260]})}
    pooled, alone = pool_shifts(one, 0.8), shift_summary(one["a"], 0.8)
    assert pooled["ratio"] == pytest.approx(alone["ratio"])
    assert pooled["ratio_ci95"][0] < pooled["ratio"] < pooled["ratio_ci95"][1] < 1
    lonely = pool_shifts({"a": constant_shift(100, 200, seeds=1)}, 0.8)
    assert lonely["ratio"] == pytest.approx(0.5) and all(math.isnan(x) for x in lonely["ratio_ci95"])
    with pytest.raises(ValueError, match="both agents"):
        pool_shifts({"a": runs_at("tmrl", {"0.8": [100]})}, 0.8)


def test_suite_summary_is_plain_json_per_shift_and_pooled_at_each_threshold():
    results = {
        "a": runs_at("tmrl", {"0.5": [40], "0.8": [100]}) + runs_at("dsrl", {"0.5": [80], "0.8": [None]}),
        "b": runs_at("tmrl", {"0.5": [20], "0.8": [50]}) + runs_at("dsrl", {"0.5": [20], "0.8": [100]}),
    }
    s = suite_summary(results, [0.8, 0.5])
    assert s["shifts"] == ["a", "b"] and s["thresholds"] == [0.5, 0.8] and "geometric mean" in s["pooling"]
    assert set(s["per_shift"]["a"]) == set(s["pooled"]) == {"0.5", "0.8"}
    assert s["per_shift"]["a"]["0.5"]["ratio_ci95"] == [None, None]  # one seed: no interval, and no NaN in JSON
    assert s["per_shift"]["a"]["0.8"]["ratio_bound"] == "upper"
    assert s["pooled"]["0.5"]["ratio"] == pytest.approx(0.5**0.5)  # sqrt(0.5 * 1)
    assert s["pooled"]["0.8"]["ratio"] == pytest.approx((100 / 400 * 0.5) ** 0.5)
    assert s["pooled"]["0.8"]["ratio_bound"] == "upper"
    json.loads(json.dumps(s, allow_nan=False))


def fake_checkpointing_run_rl(trained):
    """A stand-in for run_rl that logs its last row and a complete checkpoint with its config."""
    import dataclasses

    def run_rl(cfg, *, policy, adapter, env, run_dir, resume, log):
        trained.append(Path(run_dir).name)
        row = {"decision": cfg.total_decisions, "rollout/episodes": 30, "rollout/success_recent": 0.9}
        row |= {"rollout/successes": 20, "eval/success_rate": 0.6}
        (Path(run_dir) / "metrics.jsonl").write_text(json.dumps(row) + "\n")
        saved = Path(run_dir) / "checkpoints" / f"{cfg.total_decisions:08d}"
        saved.mkdir(parents=True)
        (saved / "config.json").write_text(json.dumps(dataclasses.asdict(cfg)))
        (saved / "complete").write_text("{}")

    return run_rl


def test_a_finished_run_is_read_back_only_with_the_settings_it_was_made_with(tmp_path, monkeypatch):
    import dataclasses

    import tmrl_vla.rl.run

    trained = []
    monkeypatch.setattr(tmrl_vla.rl.run, "run_rl", fake_checkpointing_run_rl(trained))
    cfg = TMRLConfig(agent=AgentConfig(kind="dsrl"), total_decisions=4, success_window=10)

    def job(config=cfg, env=None):
        env = env or EnvSpec(shift="dim_light")
        return ComparisonRun(
            config=config, env=env, run_dir=str(tmp_path / "run"), policy="p", adapter=None, thresholds=(0.5, 0.8)
        )

    first = run_or_read(job())
    assert trained == ["run"] and json.loads((tmp_path / "run" / "env.json").read_text())["shift"] == "dim_light"
    assert first["episodes_to_each_threshold"] == {"0.5": 30, "0.8": None}  # evaluation: 0.6
    assert run_or_read(job()) == first and trained == ["run"]  # the same settings: read back, not trained
    with pytest.raises(ValueError, match=r"env.shift \('dim_light' vs 'moved_camera'\)"):
        run_or_read(job(env=EnvSpec(shift="moved_camera")))
    with pytest.raises(ValueError, match=r"sac.gamma \(0.99 vs 0.9\)"):
        run_or_read(job(config=dataclasses.replace(cfg, sac=dataclasses.replace(cfg.sac, gamma=0.9))))
    # a report reads the run as it stands, whatever it is asked with
    assert run_or_read(dataclasses.replace(job(env=EnvSpec(shift="moved_camera")), report=True)) == first
    assert trained == ["run"]


def test_an_archived_run_comes_back_only_into_an_empty_run_dir_and_only_at_its_length(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"decision": d, "rollout/episodes": d} for d in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "env.json").write_text(json.dumps({"shift": "dim_light"}))
    archived = archive_run(run, tmp_path / "archive" / "tmrl" / "seed0")
    assert not restore_archived(archived, tmp_path / "longer", total_decisions=4)  # not finished at this length
    assert not (tmp_path / "longer").exists()
    assert not restore_archived(archived, run, total_decisions=3)  # run holds its own metrics: left alone
    assert restore_archived(archived, tmp_path / "lost", total_decisions=3)
    assert sorted(p.name for p in (tmp_path / "lost").iterdir()) == ["env.json", "metrics.jsonl.gz"]
    assert not restore_archived(archived, tmp_path / "lost", total_decisions=3)  # once


def test_episode_bars_stop_at_zero_and_missing_intervals_pass_through():
    assert _floored_at_zero([-96.6, 925.3]) == [0.0, 925.3]
    assert _floored_at_zero([120.0, 400.0]) == [120.0, 400.0]
    assert _floored_at_zero([None, None]) == [None, None] and _floored_at_zero(None) is None
