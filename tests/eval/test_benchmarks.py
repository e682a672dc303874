"""The benchmark scripts run and end with the one JSON line their docs promise (tiny repeats)."""

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
MS_DIGITS = 0.005  # interleaved_medians prints each median in ms with 2 decimals


@pytest.fixture
def run_bench(capsys, monkeypatch):
    """``run_bench(script, *args)``: the script's ``main(args)`` in this process (its imports are
    already paid for), returning its last-line JSON and the median timings (ms) it printed."""
    monkeypatch.syspath_prepend(str(ROOT / "eval"))  # the scripts import benchlib from beside them

    def run(script: str, *args: str) -> tuple[dict, dict[str, float]]:
        spec = importlib.util.spec_from_file_location(script.removesuffix(".py"), ROOT / "eval" / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        threads, rng = torch.get_num_threads(), torch.get_rng_state()
        try:
            returned = module.main(list(args))
        finally:
            torch.set_num_threads(threads)
            torch.set_rng_state(rng)
        lines = capsys.readouterr().out.strip().splitlines()
        assert json.loads(lines[-1]) == returned  # the printed last line is what main returns
        medians = {m[1]: float(m[2]) for m in (re.fullmatch(r"(\w+)\s+median ([\d.]+) ms", s) for s in lines) if m}
        return returned, medians

    yield run
    sys.modules.pop("benchlib", None)


def assert_ratio_of(reported: float, num: float, den: float, decimals: int) -> None:
    """``reported`` is round(num / den, decimals) for the unrounded timings behind the printed ones."""
    assert num > 0 and den > 0 and math.isfinite(reported)
    low = (num - MS_DIGITS) / (den + MS_DIGITS) - 0.5 * 10**-decimals
    high = (num + MS_DIGITS) / (den - MS_DIGITS) + 0.5 * 10**-decimals
    assert low <= reported <= high, (reported, num, den)


def test_bench_decision_times_the_presets_heads_and_all_three(run_bench):
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


def test_bench_critic_reports_the_ensemble_speedup(run_bench):
    result, ms = run_bench("bench_critic.py", "--repeats", "2", "--hidden", "16", "--batch", "8")
    assert result["n_critics"] == 5 and result["device"] == "cpu"
    assert (result["hidden"], result["batch"], result["repeats"]) == (16, 8, 2)
    assert set(ms) == {"batched", "looped"}
    assert_ratio_of(result["ensemble_speedup"], ms["looped"], ms["batched"], 3)
    assert 0.1 < result["ensemble_speedup"] < 50
