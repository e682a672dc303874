"""The benchmark scripts run and end with the one JSON line their docs promise (tiny repeats)."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MS_DIGITS = 0.005  # interleaved_medians prints each median in ms with 2 decimals


def run_bench(script: str, *args: str) -> tuple[dict, dict[str, float]]:
    """The script's last-line JSON and the median timings (ms) it printed before it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "eval" / script), *args], env=env, capture_output=True, text=True, check=True
    )
    lines = out.stdout.strip().splitlines()
    medians = {m[1]: float(m[2]) for m in (re.fullmatch(r"(\w+)\s+median ([\d.]+) ms", s) for s in lines) if m}
    return json.loads(lines[-1]), medians


def assert_ratio_of(reported: float, num: float, den: float, decimals: int) -> None:
    """``reported`` is round(num / den, decimals) for the unrounded timings behind the printed ones."""
    assert num > 0 and den > 0 and math.isfinite(reported)
    low = (num - MS_DIGITS) / (den + MS_DIGITS) - 0.5 * 10**-decimals
    high = (num + MS_DIGITS) / (den - MS_DIGITS) + 0.5 * 10**-decimals
    assert low <= reported <= high, (reported, num, den)


def test_bench_decision_times_the_presets_heads_and_all_three():
    preset, ms = run_bench("bench_decision.py", "--repeats", "2")
    assert preset["heads"] == ["z", "y"] and preset["repeats"] == 2 and preset["batch"] == 1
    assert set(ms) == {"bare", "lora", "decision"}
    assert_ratio_of(preset["decision_latency_ratio"], ms["decision"], ms["bare"], 4)
    assert_ratio_of(preset["decision_vs_lora_ratio"], ms["decision"], ms["lora"], 4)
    # A decision is the bare sampling plus a small head: never an order of magnitude off it.
    assert 0.2 < preset["decision_latency_ratio"] < 10
    every, ms = run_bench("bench_decision.py", "--repeats", "2", "--all-heads")
    assert every["heads"] == ["z", "y", "eps_c"]
    assert_ratio_of(every["decision_latency_ratio"], ms["decision"], ms["bare"], 4)


def test_bench_critic_reports_the_ensemble_speedup():
    result, ms = run_bench("bench_critic.py", "--repeats", "2", "--hidden", "16", "--batch", "8")
    assert result["n_critics"] == 5 and result["device"] == "cpu"
    assert (result["hidden"], result["batch"], result["repeats"]) == (16, 8, 2)
    assert set(ms) == {"batched", "looped"}
    assert_ratio_of(result["ensemble_speedup"], ms["looped"], ms["batched"], 3)
    assert 0.1 < result["ensemble_speedup"] < 50
