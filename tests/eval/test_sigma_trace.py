import argparse
import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("sigma_trace", ROOT / "eval" / "sigma_trace.py")
sigma_trace = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sigma_trace)

from tmrl_vla.rl.analysis import summarise_sigma  # noqa: E402  (what the script summarises with)


def test_summary_splits_sigma_by_gripper_state():
    records = [
        {"sigma": [0.9, 0.8, 0.1], "gripper": [1.0, 1.0, 0.0], "success": True, "length": 3},
        {"sigma": [0.7, 0.3], "gripper": [1.0, 0.0], "success": False, "length": 2},
    ]
    s = summarise_sigma(records, open_value=1.0, closed_value=0.0)
    assert s["sigma_mean"] == pytest.approx(2.8 / 5)
    assert s["sigma_mean_gripper_open"] == pytest.approx(0.8)
    assert s["sigma_mean_gripper_closed"] == pytest.approx(0.2)
    assert s["successes"] == 1 and s["decisions"] == 5 and s["decisions_gripper_closed"] == 2


def test_successful_episodes_split_around_the_decision_that_closed_the_gripper():
    records = [  # the chunk chosen at decision 2 closed the gripper (read closed from decision 3)
        {"sigma": [0.2, 0.6, 0.1, 0.0, 0.05], "gripper": [1.0, 1.0, 1.0, 0.0, 0.0], "success": True, "length": 5},
        {"sigma": [0.5, 0.5], "gripper": [1.0, 1.0], "success": True, "length": 2},  # never closed: no split
        {"sigma": [0.9, 0.9, 0.9], "gripper": [1.0, 0.0, 0.0], "success": False, "length": 3},  # failures: none
    ]
    s = summarise_sigma(records, open_value=1.0, closed_value=0.0)
    assert s["successes_sigma_reach"] == pytest.approx(0.4)
    assert s["successes_sigma_grasp"] == pytest.approx(0.1)
    assert s["successes_sigma_after"] == pytest.approx(0.025)
    assert summarise_sigma(records[2:], 1.0, 0.0)["successes_sigma_grasp"] is None


def test_trace_of_a_saved_agent(tiny_base_policy, tiny_rl, tmp_path, capsys):
    from tmrl_vla.csp.config import CSPConfig
    from tmrl_vla.csp.policy import CSPPolicy
    from tmrl_vla.envs.pick_cube import GRIPPER_CLOSED, GRIPPER_OPEN, PickCubeConfig, PickCubeEnv
    from tmrl_vla.policies import load_lerobot_policy
    from tmrl_vla.rl.pretrained import TMRLAgent
    from tmrl_vla.rl.trainer import TMRLTrainer

    policy, pre, post = load_lerobot_policy(tiny_base_policy)
    csp = CSPPolicy.from_base(policy, CSPConfig(noise_scale="none"))
    adapter = csp.save_pretrained(tmp_path / "adapter")
    # z and sigma only, as in the preset: the CSP policy then draws its context noise itself
    config = tiny_rl(total_decisions=2, eval_every=100, heads=("z", "y"))
    t = TMRLTrainer(
        config,
        csp=csp,
        preprocessor=pre,
        postprocessor=post,
        make_env=lambda: PickCubeEnv(PickCubeConfig(episode_length=6)),
        out_dir=tmp_path / "run",
    )
    t.train()
    t.close()
    agent_dir = TMRLAgent.from_trainer(t, base_policy=str(tiny_base_policy), csp_adapter=str(adapter)).save_pretrained(
        tmp_path / "agent"
    )
    sigma_trace.main(
        ["--agent", str(agent_dir), "--episodes", "2", "--episode-length", "6", "--out", str(tmp_path / "trace")]
    )
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((tmp_path / "trace" / "sigma_trace.json").read_text())
    records = saved.pop("records")
    assert saved == last  # the printed summary is the saved one, made from the saved records
    assert last["episodes"] == len(records) == 2 and last["decisions"] == 4  # 6 steps, 5 per decision
    assert [r["length"] for r in records] == [len(r["sigma"]) for r in records] == [2, 2]
    assert all(len(r["gripper"]) == len(r["sigma"]) for r in records)
    sigmas = [x for r in records for x in r["sigma"]]
    assert last["sigma_mean"] == pytest.approx(sum(sigmas) / len(sigmas), abs=1e-12)
    assert last["successes"] == sum(r["success"] for r in records)
    assert last == summarise_sigma(records, GRIPPER_OPEN, GRIPPER_CLOSED)
    assert (tmp_path / "trace" / "sigma_trace.png").stat().st_size > 1000

    # The same agent on the same states traces the same episodes, whatever torch's global generator
    # was doing before (the CSP context noise comes from the collector's seeded generator).
    def run():
        args = argparse.Namespace(
            agent=str(agent_dir), episodes=2, shift="moved_camera", seed=5, stochastic=False, episode_length=6
        )
        return sigma_trace.trace(args)

    torch.manual_seed(1)
    first = run()
    torch.manual_seed(2)
    assert run() == first
    assert [len(r["sigma"]) for r in first] == [2, 2]
