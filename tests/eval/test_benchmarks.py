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
        medians = {m[1]: float(m[2]) for m in (re.match(r"([\w.]+)\s+median ([\d.]+) ms", s) for s in lines) if m}
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


def test_bench_overhead_merged_csp_is_the_bare_policy(run_bench):
    result, ms = run_bench("bench_overhead.py", "--repeats", "2")
    assert result["identical_outputs_sigma_0"] and result["model"] == "tiny" and result["dtype"] == "float32"
    assert set(ms) == {"bare", "lora", "sigma_0", "sigma_0.5", "unmerged"}
    assert_ratio_of(result["ratio_sigma_0"], ms["sigma_0"], ms["bare"], 4)
    assert_ratio_of(result["ratio_sigma_0_vs_lora"], ms["unmerged"], ms["lora"], 4)
    only, ms = run_bench("bench_overhead.py", "--repeats", "1", "--variants", "bare,sigma_0")
    assert set(ms) == {"bare", "sigma_0"} and set(only) >= {"ratio_sigma_0", "median_ms", "parameters"}
    assert "ratio_sigma_0.5" not in only


def test_bench_train_step_compares_csp_with_lerobots_peft(run_bench):
    result, ms = run_bench("bench_train_step.py", "--repeats", "2")
    assert set(ms) == {"csp", "lerobot"} and result["repeats"] == 2
    assert_ratio_of(result["train_step_ratio"], ms["csp"], ms["lerobot"], 4)
    # The same LoRA on both sides; CSP adds only its sigma embedding (32 features -> the expert width).
    trainable = result["trainable_parameters"]
    assert 0 < trainable["csp"] - trainable["lerobot"] <= 33 * 96
    assert all(0.05 <= s <= 1 for s in result["sigma"])


def test_bench_decision_has_no_pi0_decision_yet(run_bench):
    with pytest.raises(SystemExit, match="prefix_inputs"):
        run_bench("bench_decision.py", "--model", "pi0")


def test_bench_memory_measures_one_configuration_in_process(run_bench):
    result, _ = run_bench("bench_memory.py", "--config", "csp_train", "--calls", "1")
    assert result["config"] == "csp_train" and result["model"] == "tiny"
    assert result["process_peak_mb"] > 0
    if result["run_peak_mb"] is not None:  # None where /proc/self/clear_refs cannot reset the peak
        assert result["process_peak_mb"] >= result["run_peak_mb"] > 0


def test_bench_memory_compares_subprocess_peaks_with_the_bare_policy(run_bench, monkeypatch):
    """The parent's summary, its subprocesses replaced by canned peaks (each would import torch)."""
    import bench_memory

    peaks = {"bare": 100.0, "csp": 101.0, "decision": 102.0, "csp_train": 110.0, "lerobot_train": 108.0}
    calls = []

    def fake(name, argv):
        calls.append((name, argv))
        return {"config": name, "run_peak_mb": peaks[name]}

    monkeypatch.setattr(bench_memory, "run_subprocess", fake)
    result = bench_memory.main(["--threads", "2", "--configs", "bare,csp_train,lerobot_train"])
    assert [c[0] for c in calls] == ["bare", "csp_train", "lerobot_train"]
    assert all(argv == ["--threads", "2"] for _, argv in calls)  # --configs is not forwarded
    assert result["ratios"]["csp_train_ratio"] == 1.1 and result["ratios"]["csp_train_vs_lerobot"] == 1.0185
    assert result["peak"] == "run_peak_mb"


def test_bench_updates_times_four_times_the_critic_updates(run_bench):
    result, ms = run_bench("bench_updates.py", "--repeats", "2", "--rows", "64")
    assert set(ms) == {"preset", "variant"}
    # The warm-up call and two repeats, each one decision of 8 updates: 2 or 8 critic steps each.
    assert result["critic_steps"] == {"utd=2": 3 * 8 * 2, "utd=8": 3 * 8 * 8}
    assert_ratio_of(result["ratio"], ms["variant"], ms["preset"], 4)
    assert result["ratio"] > 1.3  # four times the critic updates, the same actor updates
    with pytest.raises(SystemExit):
        run_bench("bench_updates.py", "--utd", "0")
