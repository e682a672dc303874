import json

import pytest

from tmrl_vla.csp.config import CSPConfig
from tmrl_vla.csp.policy import CSPPolicy
from tmrl_vla.envs.pick_cube import PickCubeConfig, PickCubeEnv
from tmrl_vla.rl.agent import SACConfig
from tmrl_vla.rl.trainer import TMRLConfig, TMRLTrainer


def trainer(tiny_base_policy, out, **overrides):
    from tmrl_vla.policies import load_lerobot_policy

    policy, pre, post = load_lerobot_policy(tiny_base_policy)
    csp = CSPPolicy.from_base(policy, CSPConfig(noise_scale="none"))
    fields = (
        dict(
            num_envs=2,
            total_decisions=4,
            warmup_decisions=2,
            eval_every=4,
            eval_episodes=2,
            save_every=2,
            hidden=16,
            num_critics=2,
            sac=SACConfig(utd=2, batch_size=4),
        )
        | overrides
    )
    return TMRLTrainer(
        TMRLConfig(**fields),
        csp=csp,
        preprocessor=pre,
        postprocessor=post,
        make_env=lambda: PickCubeEnv(PickCubeConfig(episode_length=6)),
        out_dir=out,
    )


def test_smoke_then_resume_continues_where_it_stopped(tiny_base_policy, tmp_path):
    t = trainer(tiny_base_policy, tmp_path)
    result = t.train()
    assert result["decisions"] == 4 and len(t.replay) == 8
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["decision"] for r in rows] == [1, 2, 3, 4]
    assert "critic/loss" not in rows[1] and "critic/loss" in rows[2]  # updates start after the warm-up
    assert 0.0 <= rows[3]["eval/success_rate"] <= 1.0
    seed_after = t.collector.next_seed

    resumed = trainer(tiny_base_policy, tmp_path, total_decisions=6)
    assert resumed.decision == 4 and len(resumed.replay) == 8 and resumed.collector.next_seed == seed_after
    resumed.train()
    resumed.close()
    assert resumed.decision == 6 and len(resumed.replay) == 12 and resumed.replay.total_added == 12


def test_resume_from_another_config_names_the_fields(tiny_base_policy, tmp_path):
    trainer(tiny_base_policy, tmp_path, total_decisions=2).train()
    with pytest.raises(ValueError, match="hidden"):
        trainer(tiny_base_policy, tmp_path, hidden=32)


def test_dsrl_is_the_same_loop_with_only_z(tiny_base_policy, tmp_path):
    t = trainer(tiny_base_policy, tmp_path, agent="dsrl", total_decisions=3)
    t.train()
    assert set(t.replay.actions) == {"z"} and set(t.agent.actor.config.heads) == {"z"}
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["actor/sigma_mean"] == 0.0 for r in rows)
    assert not any(k.endswith(("_y", "_eps_c")) for r in rows for k in r)


def test_sigkill_mid_training_resumes_without_lost_transitions(tiny_base_policy, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import torch

    script = Path(__file__).with_name("tmrl_run.py")
    cmd = [sys.executable, str(script), str(tiny_base_policy), str(tmp_path), "40"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "checkpoint.pt"
    deadline = time.time() + 240
    while time.time() < deadline:  # kill once a few decisions are on disk
        time.sleep(0.5)
        metrics = tmp_path / "metrics.jsonl"
        if checkpoint.exists() and metrics.exists() and len(metrics.read_text().splitlines()) >= 4:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "result.json").exists()  # it really died mid-run
    killed_at = torch.load(checkpoint, weights_only=False)["decision"]
    assert 0 < killed_at < 40
    subprocess.run(cmd[:-1] + ["6" if killed_at < 6 else str(killed_at + 2)], env=env, check=True, timeout=240)
    result = json.loads((tmp_path / "result.json").read_text())
    # every decision from 1 to the end contributed exactly num_envs transitions, none lost, none doubled
    assert result["replay_added"] == result["decisions"] * 2
