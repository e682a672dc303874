import json
from pathlib import Path

import pytest
from conftest import tiny_rl_config

from tmrl_vla.assets import AssetsConfig, EvalConfig
from tmrl_vla.bc import BCConfig
from tmrl_vla.csp.trainer import CSPTrainConfig
from tmrl_vla.data.demos import DemoConfig
from tmrl_vla.finetune import FinetuneConfig, parse_args, train

TINY_RL = tiny_rl_config()


def tiny_preset(tmp_path) -> FinetuneConfig:
    return FinetuneConfig(
        assets=AssetsConfig(
            demos=DemoConfig(num_episodes=2),
            bc=BCConfig(steps=3, batch_size=4, warmup_steps=1, num_threads=1),
            eval=EvalConfig(episodes=2, num_envs=2),
            csp=CSPTrainConfig(steps=2, batch_size=4, warmup_steps=1, calibration_batches=1, num_threads=1),
        ),
        rl=TINY_RL,
        task_demos=1,
        output_dir=str(tmp_path / "out"),
        cache_dir=str(tmp_path / "cache"),
    )


def test_overrides_apply_on_top_of_the_preset(tmp_path):
    preset = tiny_preset(tmp_path)
    cfg = parse_args(
        preset, ["--assets.bc.steps=7", "--output_dir=elsewhere", "--assets.eval.finetune_shift=dim_light"]
    )
    assert cfg.assets.bc.steps == 7 and cfg.output_dir == "elsewhere"
    assert cfg.assets.eval.finetune_shift == "dim_light"
    assert cfg.assets.demos.num_episodes == 2  # untouched fields keep the preset's value
    assert parse_args(preset, []) == preset
    cfg = parse_args(preset, ["--agent=dsrl", "--rl.sac.utd=3", "--resume=true", "--env.shift=dim_light"])
    assert cfg.rl.agent.kind == "dsrl" and cfg.rl.sac.utd == 3 and cfg.resume and cfg.env.shift == "dim_light"
    assert cfg.rl.num_envs == 2 and cfg.rl.agent.hidden == preset.rl.agent.hidden
    cfg = parse_args(preset, ["--rl.observation.encoder=facebook/dinov2-with-registers-small"])
    assert cfg.rl.observation.encoder == "facebook/dinov2-with-registers-small"
    assert preset.rl.observation.encoder is None


def test_changing_the_env_type_drops_the_presets_options_for_the_old_one(tmp_path):
    from tmrl_vla.envs.spec import EnvSpec

    preset = tiny_preset(tmp_path)
    assert preset.env.shift == "moved_camera"
    cfg = parse_args(preset, ["--env.type=lerobot", "--env.options={env_type: pusht}"])
    assert cfg.env == EnvSpec(type="lerobot", options={"env_type": "pusht"})
    assert parse_args(preset, ["--env.type=so100_pick_cube"]).env == preset.env  # the same type keeps them
    assert cfg.assets == preset.assets


def test_recipe_smoke_builds_assets_trains_then_resumes(tmp_path, capsys, fake_hub):
    import dataclasses

    import pytest

    from tmrl_vla.rl.pretrained import TMRLAgent

    cfg = tiny_preset(tmp_path)
    summary = train(cfg)
    out = tmp_path / "out"
    assert json.loads((out / "config.json").read_text())["assets"]["bc"]["steps"] == 3
    assert (out / "base_policy_success.png").stat().st_size > 1000
    written = json.loads((out / "summary.json").read_text())
    assert set(written["base_policy_eval"]) == {
        "in_distribution",
        "in_distribution_swapped_images",
        f"finetune_{cfg.assets.eval.finetune_shift}",
    }
    for result in written["base_policy_eval"].values():
        assert result["episodes"] == 2 and result["success_rate"] * 2 in (0.0, 1.0, 2.0)
    assert set(written["timings"]["build_seconds_by_stage"]) == {"demos", "base_policy", "base_eval", "csp_adapter"}
    assert written["timings"]["rl_seconds"] > 0

    run = out / "tmrl"
    rl = written["rl"]
    # the task's expert demonstrations, recorded on the fine-tuning shift into the cache, in the replay
    assert Path(written["task_demos"]).parent.parent == tmp_path / "cache"
    assert json.loads((run / "demos.json").read_text())["episodes"] == 1
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["decision"] for r in rows] == [1, 2, 3] and "eval/success_rate" in rows[-1]
    assert rl["decisions"] == 3 and rl["final_eval_success"] == rows[-1]["eval/success_rate"]
    assert (run / "learning_curve.png").stat().st_size > 1000
    assert json.loads((run / "checkpoints" / f"{3:08d}" / "config.json").read_text())["total_decisions"] == 3
    agent = TMRLAgent.from_pretrained(rl["policy"])
    assert agent.config.active_heads == ("z", "y", "eps_c")
    assert agent.csp_adapter == str(Path(rl["policy"]) / "csp_adapter")  # the cache's adapter, embedded
    assert agent.results["episodes"] == rl["episodes"] and "moved_camera" in agent.results["env"]
    card = (Path(rl["policy"]) / "README.md").read_text()
    assert f"| training episodes | {rl['episodes']} |" in card and "| last evaluation success |" in card
    log = capsys.readouterr().out
    assert "learning_curve.png" in log and "--resume" in log

    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg)
    longer = dataclasses.replace(cfg, resume=True, rl=dataclasses.replace(TINY_RL, total_decisions=5))
    again = train(longer)
    log = capsys.readouterr().out
    assert log.count("reusing") == 5 and "building" not in log  # the four stages and the task demos
    assert "resumed from" in log and again["rl"]["decisions"] == 5
    assert again["base_policy"] == summary["base_policy"]

    from tmrl_vla.finetune import HubPush

    # DSRL, on a new cache (it does not build the CSP adapter), pushed to the Hub at each checkpoint
    # (decisions 2 and 3) and at the end
    dsrl_rl = dataclasses.replace(TINY_RL, agent=dataclasses.replace(TINY_RL.agent, kind="dsrl"))
    hub = HubPush(repo_id="me/dsrl-pick", push_checkpoints=True, license="mit")
    dsrl_cache = tmp_path / "dsrl_cache"
    dsrl = train(dataclasses.replace(cfg, rl=dsrl_rl, push_to_hub=True, hub=hub, cache_dir=str(dsrl_cache)))
    assert set(dsrl["timings"]["build_seconds_by_stage"]) == {"demos", "base_policy", "base_eval"}
    assert dsrl["csp_adapter"] is None and not list(dsrl_cache.glob("csp_adapter-*"))
    assert "CSP adapter:  not built" in capsys.readouterr().out
    assert TMRLAgent.from_pretrained(dsrl["rl"]["policy"]).config.active_heads == ("z",)
    assert (out / "dsrl" / "metrics.jsonl").exists()
    uploads = [c for c in fake_hub if c["call"] == "upload_folder"]
    assert [u["commit_message"] for u in uploads] == [
        "Checkpoint at decision 2 (" + uploads[0]["commit_message"].split("(")[1],
        "Checkpoint at decision 3 (" + uploads[1]["commit_message"].split("(")[1],
        "Upload DSRL agent",
    ]
    assert dsrl["rl"]["commit_url"] == "https://huggingface.co/me/dsrl-pick/commit/c0ffee"
    final = uploads[-1]["files"]
    processors = [
        "policy_postprocessor.json",
        "policy_postprocessor_step_0_unnormalizer_processor.safetensors",
        "policy_preprocessor.json",
        "policy_preprocessor_step_5_normalizer_processor.safetensors",
    ]
    # the base was a local directory (the cache): it travels inside; DSRL has no adapter
    assert sorted(final) == sorted(
        ["README.md", "config.json", "learning_curve.png", "model.safetensors", "training.json", *processors]
        + [f"base_policy/{name}" for name in ["config.json", "model.safetensors", *processors]]
    )
    card = final["README.md"].decode()
    assert "license: mit" in card and "lerobot-eval --policy.path=me/dsrl-pick --env.type=so100_pick_cube" in card
    assert "--rl.agent.kind=dsrl" in card and str(tmp_path) not in card


def test_a_push_needs_a_valid_repo_id_before_anything_runs(tmp_path):
    import dataclasses

    import pytest

    from tmrl_vla.finetune import HubPush
    from tmrl_vla.hub import InvalidRepoIdError

    cfg = dataclasses.replace(tiny_preset(tmp_path), push_to_hub=True)
    with pytest.raises(ValueError, match="--push_to_hub=true needs --hub.repo_id"):
        train(cfg)
    with pytest.raises(InvalidRepoIdError, match="'me/my agent' is not a valid Hub repo id"):
        train(dataclasses.replace(cfg, hub=HubPush(repo_id="me/my agent")))
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_an_adapter_retrained_on_the_embedded_policy_is_used_and_one_of_another_base_refused(tmp_path, tiny_adapter):
    import dataclasses
    import shutil

    import pytest

    from tmrl_vla.finetune import CSPSource
    from tmrl_vla.rl.pretrained import TMRLAgent

    cfg = tiny_preset(tmp_path)
    with pytest.raises(ValueError, match="was trained on base"):  # tiny_adapter's base is another policy
        train(dataclasses.replace(cfg, csp=CSPSource(path=str(tiny_adapter))))
    assert not list((tmp_path / "cache").glob("csp_adapter-*"))  # the run does not read the embedded one
    train(dataclasses.replace(cfg, skip_rl=True, output_dir=str(tmp_path / "assets")))  # builds it
    # the cache's adapter, moved elsewhere, stands in for one retrained on the embedded policy
    retrained = shutil.copytree(next((tmp_path / "cache").glob("csp_adapter-*")), tmp_path / "retrained")
    summary = train(dataclasses.replace(cfg, csp=CSPSource(path=str(retrained)), output_dir=str(tmp_path / "out2")))
    assert summary["csp_adapter"] == str(retrained)
    agent = TMRLAgent.from_pretrained(summary["rl"]["policy"])
    assert (Path(agent.csp_adapter) / "adapter_model.safetensors").read_bytes() == (
        retrained / "adapter_model.safetensors"
    ).read_bytes()


def test_plot_handles_perfect_and_zero_rates(tmp_path):
    from tmrl_vla.finetune import plot_base_eval
    from tmrl_vla.rollout import wilson_interval

    results = {
        "in_distribution": {"success_rate": 1.0, "ci95": list(wilson_interval(50, 50)), "episodes": 50},
        "shifted": {"success_rate": 0.0, "ci95": list(wilson_interval(0, 50)), "episodes": 50},
        "rounded": {"success_rate": 1.0, "ci95": [0.93, 0.9999999999999999], "episodes": 50},
    }
    plot_base_eval(results, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000


@pytest.mark.slow  # the recipe under torchrun (about 30 s); tests/rl and tests/csp check two-process training
def test_recipe_on_two_processes(tmp_path):
    """The recipe under torchrun with 2 CPU processes: rank 0 builds the assets, both train one policy."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tmrl_vla.rl.pretrained import TMRLAgent

    root = Path(__file__).resolve().parents[1]
    overrides = [
        "--assets.demos.num_episodes=2",
        "--assets.bc.steps=3",
        "--assets.bc.batch_size=4",
        "--assets.bc.warmup_steps=1",
        "--assets.eval.episodes=2",
        "--assets.eval.num_envs=2",
        "--assets.csp.steps=2",
        "--assets.csp.batch_size=4",
        "--assets.csp.warmup_steps=1",
        "--assets.csp.calibration_batches=1",
        "--rl.num_envs=2",
        "--rl.total_decisions=3",
        "--rl.sac.warmup_decisions=1",
        "--rl.eval_every=3",
        "--rl.eval_episodes=2",
        "--rl.agent.hidden=16",
        "--rl.agent.num_critics=2",
        "--rl.sac.utd=1",
        "--rl.sac.batch_size=4",
        "--env.episode_length=6",
        f"--output_dir={tmp_path / 'out'}",
        f"--cache_dir={tmp_path / 'cache'}",
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    subprocess.run(cmd + [str(root / "recipes" / "finetune_pick.py"), *overrides], check=True, env=env, timeout=600)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rl"]["decisions"] == 3 and summary["rl"]["episodes"] > 0
    marker = json.loads((tmp_path / "out" / "tmrl" / "checkpoints" / f"{3:08d}" / "complete").read_text())
    assert marker["world_size"] == 2
    assert TMRLAgent.from_pretrained(summary["rl"]["policy"]).config.hidden == 16
    saved = json.loads((tmp_path / "out" / "tmrl" / "checkpoints" / f"{3:08d}" / "config.json").read_text())
    assert saved["num_envs"] == 2 and saved["agent"]["hidden"] == 16


def test_task_demos_need_the_pick_env_and_yield_to_a_dataset_of_your_own(tmp_path):
    import dataclasses

    from tmrl_vla.envs.spec import EnvSpec
    from tmrl_vla.finetune import task_demos

    lines = []
    other = dataclasses.replace(tiny_preset(tmp_path), env=EnvSpec(type="lerobot", options={"env_type": "pusht"}))
    assert task_demos(other, {}, lines.append) is other.rl
    assert lines == ["[demos] no scripted expert for lerobot: none in the replay (--rl.demos.repo_id adds yours)"]
    yours = parse_args(tiny_preset(tmp_path), ["--rl.demos.repo_id=you/pick_demos"])
    summary: dict = {}
    assert task_demos(yours, summary, lines.append) is yours.rl and summary == {}
    assert not (tmp_path / "cache").exists()  # nothing recorded
