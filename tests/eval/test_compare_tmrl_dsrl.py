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
