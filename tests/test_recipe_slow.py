"""End to end: the README's first command on the embedded default, from an empty cache (~15 minutes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_finetune_pick_recipe_from_an_empty_cache(tmp_path):
    from tmrl_vla.metrics import read_metrics

    env = {**os.environ, "TMRL_VLA_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--num_processes", "1", str(ROOT / "recipes" / "finetune_pick.py")]
    subprocess.run(cmd + [f"--output_dir={tmp_path / 'out'}"], check=True, env=env, cwd=ROOT, timeout=1800)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    results = summary["base_policy_eval"]
    assert results["in_distribution"]["success_rate"] >= 0.8  # good where it was taught
    assert results["in_distribution_swapped_images"]["success_rate"] <= 0.4  # it reads the image
    assert results["finetune_moved_camera"]["success_rate"] <= 0.3  # the fine-tuning task is a real gap
    assert (Path(summary["csp_adapter"]) / "adapter_model.safetensors").exists()
    rl = summary["rl"]
    run = tmp_path / "out" / "tmrl"
    assert rl["decisions"] == 200 and rl["episodes"] > 0
    # The final evaluation is the run's last eval row, a whole number of its evaluation episodes.
    config = json.loads((tmp_path / "out" / "config.json").read_text())["rl"]
    total, every, episodes = config["total_decisions"], config["eval_every"], config["eval_episodes"]
    assert Path(rl["metrics"]) == run / "metrics.jsonl"
    evals = [r["eval/success_rate"] for r in read_metrics(run / "metrics.jsonl") if "eval/success_rate" in r]
    assert len(evals) == sum(d % every == 0 or d == total for d in range(1, total + 1))  # 100 and 200
    assert rl["final_eval_success"] == evals[-1]
    wins = rl["final_eval_success"] * episodes
    assert wins == round(wins) and 0 <= round(wins) <= episodes, (rl["final_eval_success"], episodes)
    assert (run / "learning_curve.png").exists() and (Path(rl["policy"]) / "config.json").exists()
    timings = summary["timings"]
    print("stage seconds:", json.dumps({**timings["build_seconds_by_stage"], "rl": timings["rl_seconds"]}))
