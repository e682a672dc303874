"""The benchmark scripts run and end with the one JSON line their docs promise (tiny repeats)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def last_json(script: str, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "eval" / script), *args], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_bench_decision_times_the_presets_heads_and_all_three():
    preset = last_json("bench_decision.py", "--repeats", "2")
    assert preset["heads"] == ["z", "y"] and preset["repeats"] == 2 and preset["decision_latency_ratio"] > 0
    every = last_json("bench_decision.py", "--repeats", "2", "--all-heads")
    assert every["heads"] == ["z", "y", "eps_c"]


def test_bench_critic_reports_the_ensemble_speedup():
    result = last_json("bench_critic.py", "--repeats", "2", "--hidden", "16", "--batch", "8")
    assert result["n_critics"] == 5 and result["ensemble_speedup"] > 0 and result["device"] == "cpu"
