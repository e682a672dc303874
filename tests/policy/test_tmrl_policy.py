"""The ``tmrl`` LeRobot policy type: export, loading (local, offline Hub cache), acting, errors."""

import json
import os
from pathlib import Path

import pytest
import torch


def trained(base_policy, out, **overrides):
    from conftest import make_tiny_trainer

    t = make_tiny_trainer(base_policy, out, log=lambda *_: None, total_decisions=3, eval_every=100, **overrides)
    t.train()
    t.close()
    return t


@pytest.fixture(scope="module")
def tmrl_run(tiny_base_policy, tiny_adapter, tmp_path_factory):
    """A TMRL agent trained for 3 decisions on the tiny policy, exported as a LeRobot policy directory."""
    from tmrl_vla.rl.pretrained import TMRLAgent

    root = tmp_path_factory.mktemp("tmrl_policy")
    t = trained(tiny_base_policy, root / "run")
    agent = TMRLAgent.from_trainer(
        t, base_policy=str(tiny_base_policy), csp_adapter=str(tiny_adapter), results={"episodes": 4, "successes": 1}
    )
    commands = {"train": "accelerate launch recipes/finetune_pick.py --rl.total_decisions=3"}
    exported = agent.save_pretrained(root / "agent", curve=t.out_dir / "learning_curve.png", commands=commands)
    return t, agent, exported


def text_files(directory: Path) -> dict[str, str]:
    return {
        str(f.relative_to(directory)): f.read_text()
        for f in sorted(directory.rglob("*"))
        if f.is_file() and f.suffix in (".json", ".md")
    }


def test_an_agent_exports_as_a_complete_lerobot_policy_directory(tmrl_run, tiny_base_policy, tiny_adapter):
    _, _, exported = tmrl_run
    files = sorted(str(f.relative_to(exported)) for f in exported.rglob("*") if f.is_file())
    assert files == [
        "README.md",
        "base_policy/config.json",
        "base_policy/model.safetensors",
        "base_policy/policy_postprocessor.json",
        "base_policy/policy_postprocessor_step_0_unnormalizer_processor.safetensors",
        "base_policy/policy_preprocessor.json",
        "base_policy/policy_preprocessor_step_5_normalizer_processor.safetensors",
        "config.json",
        "csp_adapter/adapter_config.json",
        "csp_adapter/adapter_model.safetensors",
        "csp_adapter/config.json",
        "csp_adapter/csp_config.json",
        "csp_adapter/csp_sigma_embedding.safetensors",
        "csp_adapter/policy_postprocessor.json",
        "csp_adapter/policy_postprocessor_step_0_unnormalizer_processor.safetensors",
        "csp_adapter/policy_preprocessor.json",
        "csp_adapter/policy_preprocessor_step_5_normalizer_processor.safetensors",
        "learning_curve.png",
        "model.safetensors",
        "policy_postprocessor.json",
        "policy_postprocessor_step_0_unnormalizer_processor.safetensors",
        "policy_preprocessor.json",
        "policy_preprocessor_step_5_normalizer_processor.safetensors",
        "training.json",
    ]
    config = json.loads((exported / "config.json").read_text())
    assert config["type"] == "tmrl"
    assert (config["base_policy"], config["csp_adapter"]) == ("./base_policy", "./csp_adapter")
    assert config["input_features"]["observation.images.front"]["shape"] == [3, 64, 64]
    # nothing that travels names a path of this machine: not the checkpoints, the tokenizer or the card
    machine = [str(tiny_base_policy), str(tiny_adapter), str(exported), os.path.expanduser("~"), "/tmp/"]
    for name, text in text_files(exported).items():
        for path in machine:
            assert path not in text, f"{name} names {path}"
    steps = json.loads((exported / "policy_preprocessor.json").read_text())["steps"]
    tokenizer = next(s for s in steps if "tokenizer" in s["registry_name"])
    assert tokenizer == {**tokenizer, "registry_name": "tmrl_vla_packaged_tokenizer"}
    assert tokenizer["config"]["tokenizer_name"] == "tmrl_vla/models/tiny_smolvlm"


def test_a_base_trained_by_another_install_is_exported_portably(tmrl_run, tiny_base_policy, tmp_path):
    """The cache may hold a base trained from a checkout that is gone: its recorded backbone path
    dangles, and it must not travel."""
    import dataclasses
    import shutil

    _, agent, _ = tmrl_run
    base = shutil.copytree(tiny_base_policy, tmp_path / "base")
    gone = "/nowhere/checkout/tmrl_vla/models/tiny_smolvlm"
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps(config | {"vlm_model_name": gone}))
    pre = json.loads((base / "policy_preprocessor.json").read_text())
    for step in pre["steps"]:
        if step["registry_name"] == "tokenizer_processor":
            step["config"]["tokenizer_name"] = gone
    (base / "policy_preprocessor.json").write_text(json.dumps(pre))
    exported = dataclasses.replace(agent, base_policy=str(base)).save_pretrained(tmp_path / "agent")
    for name, text in text_files(exported).items():
        assert "/nowhere" not in text, name
    assert json.loads((exported / "base_policy" / "config.json").read_text())["vlm_model_name"] == (
        "tmrl_vla/models/tiny_smolvlm"
    )


def test_the_card_has_front_matter_results_curve_and_commands(tmrl_run):
    from huggingface_hub import metadata_load

    _, _, exported = tmrl_run
    card = (exported / "README.md").read_text()
    meta = metadata_load(exported / "README.md")
    assert meta["library_name"] == "lerobot" and meta["pipeline_tag"] == "robotics"
    assert {"lerobot", "tmrl", "csp", "reinforcement-learning"} <= set(meta["tags"])
    assert meta["license"] == "apache-2.0" and "base_model" not in meta  # the base travels inside the repo
    assert "| training episodes | 4 |" in card and "| successes in training | 1 |" in card
    assert "![Learning curve](learning_curve.png)" in card
    assert "accelerate launch recipes/finetune_pick.py --rl.total_decisions=3" in card
    assert "lerobot-eval --policy.path=path/to/this/agent --env.type=so100_pick_cube" in card
    assert "`./base_policy` (in this repo)" in card
    assert "{" not in card.replace("```", "")


def test_the_policy_acts_exactly_as_the_projects_own_decision_path(tmrl_run, tiny_base_policy, tiny_adapter):
    from tmrl_vla.envs.batched import BatchedEnv
    from tmrl_vla.envs.pick_cube import PickCubeConfig, PickCubeEnv
    from tmrl_vla.policy.modeling_tmrl import TMRLAgentPolicy
    from tmrl_vla.rl.decision import decide
    from tmrl_vla.rl.pretrained import TMRLAgent
    from tmrl_vla.rl.run import load_frozen_policy
    from tmrl_vla.rollout import obs_to_batch

    _, _, exported = tmrl_run
    policy = TMRLAgentPolicy.from_pretrained(exported)
    assert policy.has_critics and policy.config.n_action_steps == 5
    # the project's own path: the frozen policy as run_rl loads it, the agent as TMRLAgent loads it
    csp, pre, _ = load_frozen_policy(str(tiny_base_policy), str(tiny_adapter))
    agent = TMRLAgent.from_pretrained(exported)
    envs = BatchedEnv(lambda: PickCubeEnv(PickCubeConfig(shift=PickCubeConfig.with_shift("moved_camera").shift)), 2)
    batch = pre(obs_to_batch(envs.reset([5, 6]), envs.task))
    envs.close()
    ours = decide(csp, agent.actor, dict(batch), deterministic=True, generator=torch.Generator().manual_seed(3))
    chunk = policy.predict_action_chunk(dict(batch), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(chunk, ours.chunk, rtol=0, atol=0)

    # select_action: one decision per n_action_steps actions, the chunk's first ones in order
    decisions = []
    real = policy.decide
    policy.decide = lambda b, **kw: decisions.append(1) or real(b, generator=torch.Generator().manual_seed(3))
    policy.reset()
    actions = [policy.select_action(dict(batch)) for _ in range(7)]
    assert len(decisions) == 2
    for k in range(5):
        torch.testing.assert_close(actions[k], ours.chunk[:, k], rtol=0, atol=0)
    torch.testing.assert_close(actions[5], ours.chunk[:, 0], rtol=0, atol=0)


def test_the_policy_loads_by_repo_id_from_the_offline_hub_cache(tmrl_run, local_hub):
    from lerobot.policies.factory import make_pre_post_processors

    from tmrl_vla.policy.modeling_tmrl import TMRLAgentPolicy

    _, agent, exported = tmrl_run
    local_hub(exported, "someone/pick-agent")
    policy = TMRLAgentPolicy.from_pretrained("someone/pick-agent")
    assert policy.csp.base_hash == agent.base_weights_hash
    for head, value in policy.actor.state_dict().items():
        assert torch.equal(value, agent.actor.state_dict()[head])
    pre, post = make_pre_post_processors(policy.config, pretrained_path="someone/pick-agent")
    assert [type(s).__name__ for s in pre.steps][3] == "PackagedTokenizerStep"


def test_a_dsrl_agent_loads_the_same_way_on_the_plain_base(tiny_base_policy, tmp_path):
    from tmrl_vla.policy.modeling_tmrl import TMRLAgentPolicy
    from tmrl_vla.rl.pretrained import TMRLAgent

    t = trained(tiny_base_policy, tmp_path / "run", kind="dsrl")
    agent = TMRLAgent.from_trainer(t, base_policy=str(tiny_base_policy), csp_adapter=None)
    exported = agent.save_pretrained(tmp_path / "agent", include_critics=False)
    assert not (exported / "csp_adapter").exists()
    policy = TMRLAgentPolicy.from_pretrained(exported)
    assert policy.config.agent.kind == "dsrl" and policy.config.csp_adapter is None and not policy.has_critics
    assert "none (the plain base policy: DSRL)" in (exported / "README.md").read_text()
    assert "dsrl" in json.loads((exported / "config.json").read_text())["tags"]


def test_a_plain_policy_is_not_an_agent_and_an_agent_is_not_a_base(tmrl_run, tiny_base_policy):
    from tmrl_vla.policies import CheckpointError, load_lerobot_policy
    from tmrl_vla.policy.modeling_tmrl import NotAnAgentError, TMRLAgentPolicy

    with pytest.raises(NotAnAgentError, match="holds a LeRobot 'smolvla' policy, not a tmrl agent"):
        TMRLAgentPolicy.from_pretrained(tiny_base_policy)
    _, _, exported = tmrl_run
    with pytest.raises(CheckpointError, match="is a fine-tuned tmrl agent, not a policy to fine-tune"):
        load_lerobot_policy(exported)


def test_an_agent_whose_base_is_not_in_the_offline_cache_says_how_to_get_it(tmrl_run, tmp_path, local_hub):
    import shutil

    from tmrl_vla.hub import NotInLocalCacheError
    from tmrl_vla.policy.modeling_tmrl import TMRLAgentPolicy

    _, _, exported = tmrl_run
    copy = shutil.copytree(exported, tmp_path / "agent")
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(config | {"base_policy": "someone/absent-base"}))
    with pytest.raises(NotInLocalCacheError, match="huggingface-cli download someone/absent-base"):
        TMRLAgentPolicy.from_pretrained(copy)


def test_features_that_do_not_fit_the_base_are_refused(tmrl_run):
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.configs.types import FeatureType, PolicyFeature

    from tmrl_vla.policies import CheckpointError
    from tmrl_vla.policy.modeling_tmrl import TMRLAgentPolicy

    _, _, exported = tmrl_run
    config = PreTrainedConfig.from_pretrained(exported)
    config.input_features["observation.images.front"] = PolicyFeature(FeatureType.VISUAL, (3, 32, 32))
    with pytest.raises(CheckpointError, match=r"observation.images.front.*\(3, 32, 32\).*\(3, 64, 64\)"):
        TMRLAgentPolicy.from_pretrained(exported, config=config)


def test_pushing_an_agent_uploads_its_directory_with_a_card_for_the_repo(tmrl_run, fake_hub):
    _, agent, _ = tmrl_run
    url = agent.push_to_hub("me/pick-agent", license="mit")
    assert url == "https://huggingface.co/me/pick-agent/commit/c0ffee"
    upload = next(c for c in fake_hub if c["call"] == "upload_folder")
    assert upload["commit_message"] == "Upload TMRL agent"
    files = upload["files"]
    assert {
        "config.json",
        "model.safetensors",
        "README.md",
        "base_policy/config.json",
        "csp_adapter/csp_config.json",
    } <= set(files)
    card = files["README.md"].decode()
    assert "license: mit" in card and 'TMRLAgentPolicy.from_pretrained("me/pick-agent")' in card
    assert json.loads(files["config.json"])["repo_id"] == "me/pick-agent"


def test_images_of_another_resolution_are_refused_before_acting(tmrl_run):
    import torch.nn.functional as F

    from tmrl_vla.policies import CheckpointError
    from tmrl_vla.policy.modeling_tmrl import TMRLAgentPolicy

    _, _, exported = tmrl_run
    policy = TMRLAgentPolicy.from_pretrained(exported)
    batch = {
        "observation.images.front": F.interpolate(torch.rand(1, 3, 64, 64), size=32),
        "observation.state": torch.zeros(1, 6),
    }
    with pytest.raises(CheckpointError, match="gives 32 x 32 images, but the policy was trained on 64 x 64"):
        policy.select_action(batch)
    with pytest.raises(CheckpointError, match="reads camera 'observation.images.front'"):
        policy.select_action({"observation.state": torch.zeros(1, 6)})


def test_lerobot_eval_runs_an_agent_unchanged(tmrl_run, tmp_path):
    """LeRobot's own CLI, as installed (its plugin discovery finds the tmrl policy and the pick env)."""
    import subprocess
    import sys

    _, _, exported = tmrl_run
    out = tmp_path / "eval"
    command = [
        str(Path(sys.executable).parent / "lerobot-eval"),
        f"--policy.path={exported}",
        "--policy.device=cpu",
        "--env.type=so100_pick_cube",
        "--env.shift=moved_camera",
        "--env.episode_length=10",
        "--eval.n_episodes=2",
        "--eval.batch_size=2",
        "--eval.use_async_envs=false",
        f"--output_dir={out}",
    ]
    env = dict(os.environ, MUJOCO_GL="egl", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((out / "eval_info.json").read_text())
    assert info["overall"]["n_episodes"] == 2
    assert len(info["per_task"][0]["metrics"]["successes"]) == 2


def test_lerobot_rollout_loads_an_agent_the_way_it_loads_any_policy(tmrl_run):
    """lerobot-rollout (LeRobot's deployment CLI) needs a robot; its policy loading runs here as is."""
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.rollout.context import _load_pretrained_policy

    from tmrl_vla.policy.modeling_tmrl import TMRLAgentPolicy

    _, agent, exported = tmrl_run
    config = PreTrainedConfig.from_pretrained(exported)
    config.pretrained_path = exported
    policy = _load_pretrained_policy(config)
    assert isinstance(policy, TMRLAgentPolicy) and policy.csp.base_hash == agent.base_weights_hash


def test_pushing_again_keeps_what_a_person_wrote_on_the_card(tmrl_run, fake_hub, hub_repos):
    _, agent, _ = tmrl_run
    agent.push_to_hub("me/pick-agent")
    card = hub_repos["me/pick-agent"]["README.md"].decode()
    hub_repos["me/pick-agent"]["README.md"] = (card + "\n## Notes\n\nTried on the lab's arm on Monday.\n").encode()
    import dataclasses

    longer = dataclasses.replace(agent, results={"episodes": 9, "successes": 5})
    longer.push_to_hub("me/pick-agent", message="Upload TMRL agent, longer run")
    again = hub_repos["me/pick-agent"]["README.md"].decode()
    assert again.endswith("## Notes\n\nTried on the lab's arm on Monday.\n")
    assert "| training episodes | 9 |" in again and "| training episodes | 4 |" not in again
    assert again.count("<!-- tmrl_vla:tmrl -->") == 1 and again.count("library_name: lerobot") == 1
    assert fake_hub[-1]["commit_message"] == "Upload TMRL agent, longer run"


def test_a_base_on_the_hub_is_named_at_its_commit_not_copied(tmrl_run, tiny_base_policy, local_hub, tmp_path):
    import dataclasses

    from huggingface_hub import metadata_load

    from tmrl_vla.policy.modeling_tmrl import TMRLAgentPolicy

    _, agent, _ = tmrl_run
    local_hub(tiny_base_policy, "someone/tiny-smolvla", commit="f" * 40)
    exported = dataclasses.replace(agent, base_policy="someone/tiny-smolvla").save_pretrained(tmp_path / "agent")
    config = json.loads((exported / "config.json").read_text())
    assert (config["base_policy"], config["base_revision"]) == ("someone/tiny-smolvla", "f" * 40)
    assert not (exported / "base_policy").exists() and (exported / "csp_adapter").is_dir()
    # the embedded adapter names the base by its Hub id, as a user would load it
    assert json.loads((exported / "csp_adapter" / "csp_config.json").read_text())["base_model"]["name_or_path"] == (
        "someone/tiny-smolvla"
    )
    assert metadata_load(exported / "README.md")["base_model"] == "someone/tiny-smolvla"
    policy = TMRLAgentPolicy.from_pretrained(exported)
    assert policy.csp.base_hash == agent.base_weights_hash


def test_an_agent_saved_again_in_place_keeps_what_it_carries(tmrl_run, tmp_path):
    import shutil

    from tmrl_vla.policy.modeling_tmrl import TMRLAgentPolicy
    from tmrl_vla.rl.pretrained import TMRLAgent

    _, _, exported = tmrl_run
    copy = shutil.copytree(exported, tmp_path / "agent")
    before = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*.safetensors")}
    loaded = TMRLAgent.from_pretrained(copy)  # its base and adapter: folders of this very directory
    loaded.save_pretrained(copy, curve=copy / "learning_curve.png")
    assert {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*.safetensors")} == before
    assert (copy / "learning_curve.png").is_file()
    assert TMRLAgentPolicy.from_pretrained(copy).csp.base_hash == loaded.base_weights_hash


def test_an_agent_trained_in_other_units_than_its_robots_converts_in_its_saved_processors(tmrl_run, tmp_path):
    import dataclasses

    import numpy as np
    from lerobot.policies.factory import make_pre_post_processors

    from tmrl_vla.policy.modeling_tmrl import TMRLAgentPolicy
    from tmrl_vla.rl.pretrained import TMRLAgent

    _, agent, exported = tmrl_run
    units = {"scale": [np.pi / 180] * 5 + [0.00045], "offset": [0.0] * 5 + [0.001]}  # degrees -> rad, 0..100 -> m
    saved = dataclasses.replace(agent, robot_units=units).save_pretrained(tmp_path / "on_robot")
    assert TMRLAgent.from_pretrained(saved).robot_units == units
    policy = TMRLAgentPolicy.from_pretrained(saved)
    assert policy.config.robot_units == units
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(saved))
    plain_pre, plain_post = make_pre_post_processors(policy.config, pretrained_path=str(exported))
    degrees = torch.tensor([[10.0, -20.0, 30.0, 0.0, 45.0, 50.0]])
    in_policy_units = degrees * torch.tensor(units["scale"]) + torch.tensor(units["offset"])
    image = torch.rand(1, 3, 64, 64)
    batch = {"observation.state": degrees, "observation.images.front": image, "task": ["pick up the cube"]}
    plain = {"observation.state": in_policy_units, "observation.images.front": image, "task": ["pick up the cube"]}
    torch.testing.assert_close(pre(batch)["observation.state"], plain_pre(plain)["observation.state"])
    action = torch.randn(1, 6)
    torch.testing.assert_close(
        post(action), (plain_post(action) - torch.tensor(units["offset"])) / torch.tensor(units["scale"])
    )
    # saved again (a push re-exports the agent), the steps are there once
    again = TMRLAgent.from_pretrained(saved).save_pretrained(tmp_path / "again")
    steps = [s["registry_name"] for s in json.loads((again / "policy_preprocessor.json").read_text())["steps"]]
    assert steps.count("tmrl_vla_robot_units_in") == 1 and steps[0] == "tmrl_vla_robot_units_in"
    assert json.loads((again / "policy_postprocessor.json").read_text())["steps"][-1]["registry_name"] == (
        "tmrl_vla_robot_units_out"
    )
    assert not TMRLAgent.from_pretrained(exported).robot_units  # an agent of a simulated task has none
