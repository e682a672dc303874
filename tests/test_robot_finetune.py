"""recipes/finetune_so101.py on the simulated SO-101: a run records its episodes, survives SIGKILL and resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tmrl_vla.robot_finetune import RobotFinetuneConfig, check_config, parse_args

ROOT = Path(__file__).resolve().parents[1]


def test_bad_combinations_are_refused_before_anything_runs():
    with pytest.raises(ValueError, match="needs --simulated=true"):
        check_config(RobotFinetuneConfig(person="simulated"))
    with pytest.raises(ValueError, match="--person must be"):
        check_config(RobotFinetuneConfig(person="robot"))
    koch = parse_args(RobotFinetuneConfig(), ["--robot.type=koch_follower", "--robot.port=x", "--simulated=true"])
    with pytest.raises(ValueError, match="so101_follower or franka_franky, not 'koch_follower'"):
        check_config(koch)
    franka = ["--robot.type=franka_franky", "--robot.ip=172.16.0.2"]
    with pytest.raises(ValueError, match="for a franka_franky pass your policy with --policy.path"):
        check_config(parse_args(RobotFinetuneConfig(), franka))
    with pytest.raises(ValueError, match="drives the SO-101 scene only"):
        flags = [*franka, "--simulated=true", "--person=simulated", "--person_intervenes_every=2"]
        check_config(parse_args(RobotFinetuneConfig(), flags))
    with pytest.raises(ValueError, match="an untrained policy drives the simulated arm"):
        flags = [*franka, "--simulated=true", "--csp.path=x"]
        check_config(parse_args(RobotFinetuneConfig(), flags))
    check_config(RobotFinetuneConfig(csp=type(RobotFinetuneConfig().csp)(path="x")))  # retrained on the embedded one


@pytest.mark.parametrize(
    "flags, builds_adapter, adapter",
    [([], True, "cache/csp"), (["--agent=dsrl"], False, None), (["--csp.path=mine"], False, "mine")],
)
def test_the_embedded_adapter_is_built_only_for_a_run_that_reads_it(monkeypatch, flags, builds_adapter, adapter):
    import tmrl_vla.robot_finetune as recipe
    from tmrl_vla.assets import Assets

    asked = []

    def build(config, cache, *, csp):
        asked.append(csp)
        return Assets(Path("d"), "local/demos", Path("cache/policy"), {}, Path("cache/csp") if csp else None, {})

    monkeypatch.setattr(recipe, "build_default_assets", build)
    assert recipe.embedded_policy_and_adapter(parse_args(RobotFinetuneConfig(), flags)) == ("cache/policy", adapter)
    assert asked == [builds_adapter]


def test_the_command_line_sets_lerobots_robot_config():
    cfg = parse_args(RobotFinetuneConfig(), ["--robot.port=/dev/ttyACM1", "--robot.id=arm7", "--agent=dsrl"])
    assert cfg.robot.port == "/dev/ttyACM1" and cfg.robot.id == "arm7" and cfg.rl.agent.kind == "dsrl"
    assert cfg.rl.num_envs == 1 and cfg.rl.eval_episodes == 0  # what run_rl_on_robot asks for


def recipe(tiny_base_policy, out, total):
    from tmrl_vla.robots.sim.so101 import scene_units

    scale, offset = scene_units()
    return [
        sys.executable,
        str(ROOT / "recipes" / "finetune_so101.py"),
        "--simulated=true",
        "--person=simulated",
        f"--policy.path={tiny_base_policy}",
        "--agent=dsrl",
        "--env.episode_length=10",  # 2 decisions of 5 ticks per episode
        f"--env.joint_scale={list(scale)}",  # the tiny policy was trained in the scene's units
        f"--env.joint_offset={list(offset)}",
        f"--rl.total_decisions={total}",
        "--rl.sac.warmup_decisions=2",
        "--rl.sac.batch_size=4",
        "--rl.sac.updates_per_decision=1",
        "--rl.agent.hidden=16",
        "--rl.agent.num_critics=2",
        "--rl.observation.image_grid=1",
        f"--output_dir={out}",
    ]


def test_a_simulated_so101_run_records_its_episodes_and_resumes_after_sigkill(tiny_base_policy, tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from tmrl_vla.state_io import load_state

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        recipe(tiny_base_policy, out, 40), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    checkpoints = out / "dsrl" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(checkpoints.glob("*/complete"))) < 2 and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)  # into the next episode: it is in flight when the process dies
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    latest = sorted(p.parent for p in checkpoints.glob("*/complete"))[-1]
    state = load_state(latest / "rank0.safetensors")
    killed_at, episodes_then = state["decision"], state["episodes"]
    assert 0 < killed_at < 40 and episodes_then >= 1

    total = killed_at + 4  # two more episodes, the second of them taken over by the simulated person
    take_over = ["--person_intervenes_every=2", "--person_intervenes_after=2"]
    from tmrl_vla.robot_finetune import train

    # the resume runs in this process: only the kill needs a process of its own
    train(parse_args(RobotFinetuneConfig(), recipe(tiny_base_policy, out, total)[2:] + ["--resume=true", *take_over]))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rl"]["decisions"] == total and summary["rl"]["episodes"] == episodes_then + 2
    assert summary["simulation"]["torque_enabled_at_exit"] == [False] * 6  # the arm left torque-safe

    # the dataset holds the episodes that ended, none of the one in flight at the kill
    dataset = LeRobotDataset("local/finetune_so101", root=out / "dataset")
    assert dataset.meta.total_episodes == summary["rl"]["episodes"]
    assert len(dataset) == 10 * dataset.meta.total_episodes  # every episode ran its 10 ticks
    frame = dataset[0]
    assert frame["observation.images.front"].shape == (3, 64, 64) and frame["action"].shape == (6,)
    assert np.isfinite(frame["observation.state"].numpy()).all() and frame["next.reward"].item() in (-1.0, 0.0)
    episodes = [json.loads(line) for line in (out / "dsrl" / "episodes.jsonl").read_text().splitlines()]
    assert len(episodes) >= summary["rl"]["episodes"] and all(e["ticks"] <= 10 for e in episodes)
    # the person took over in the odd-numbered episode after the resume, from its 3rd tick on (the
    # take-over key is read at the end of tick 2): those ticks are marked, in the log and the data
    assert [e["episode"] for e in episodes[-2:]] == [episodes_then, episodes_then + 1]  # numbered on after the resume
    taken = [e for e in episodes if e["intervention_ticks"]]
    assert taken and all(e["episode"] % 2 == 1 and e["intervention_ticks"] == e["ticks"] - 2 for e in taken)
    marked = int(sum(bool(dataset[i]["intervention"]) for i in range(len(dataset))))
    assert marked == sum(e["intervention_ticks"] for e in taken)
    assert (out / "dsrl" / "pretrained_model" / "config.json").exists()


def test_a_robot_run_pushes_its_agent_with_a_card_that_runs_it_on_the_arm(tiny_base_policy, tmp_path, fake_hub):
    from tmrl_vla.finetune import HubPush
    from tmrl_vla.robot_finetune import train

    with pytest.raises(ValueError, match="needs --hub.repo_id"):
        check_config(parse_args(RobotFinetuneConfig(), ["--push_to_hub=true"]))
    args = recipe(tiny_base_policy, tmp_path / "run", 4)[2:]  # the flags, without the interpreter and script
    cfg = parse_args(RobotFinetuneConfig(), [*args, "--push_to_hub=true", "--hub.repo_id=me/so101-dsrl"])
    assert cfg.hub == HubPush(repo_id="me/so101-dsrl")
    summary = train(cfg)
    assert summary["rl"]["commit_url"] == "https://huggingface.co/me/so101-dsrl/commit/c0ffee"
    files = [c for c in fake_hub if c["call"] == "upload_folder"][-1]["files"]
    card = files["README.md"].decode()
    # trained through the env's unit conversion: the pushed policy converts LeRobot's degrees itself
    steps = json.loads(files["policy_preprocessor.json"])["steps"]
    assert steps[0]["registry_name"] == "tmrl_vla_robot_units_in" and len(steps[0]["config"]["scale"]) == 6
    assert "library_name: lerobot" in card and str(tmp_path) not in card
    assert "lerobot-rollout --strategy.type=base --robot.type=so101_follower --robot.port=<the arm's port>" in card
    assert "--policy.path=me/so101-dsrl" in card and "python recipes/finetune_so101.py" in card


def test_demonstrations_must_be_paid_as_the_robot_pays_its_ticks():
    demos = ["--simulated=true", "--rl.demos.repo_id=me/so101_demos"]
    check_config(parse_args(RobotFinetuneConfig(), demos))  # the preset pays them as step_penalty does
    with pytest.raises(ValueError, match=r"'sparse'.*--rl.demos.step_reward=0.0 --rl.demos.success_reward=1.0"):
        check_config(parse_args(RobotFinetuneConfig(), [*demos, "--env.reward=sparse"]))
    sparse = [*demos, "--env.reward=sparse", "--rl.demos.step_reward=0", "--rl.demos.success_reward=1"]
    check_config(parse_args(RobotFinetuneConfig(), sparse))
