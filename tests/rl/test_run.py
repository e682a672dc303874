"""The library's RL entry point (tmrl_vla.rl.run): the frozen policy an agent steers, and one tiny run."""

import json

import pytest
import torch

import tmrl_vla.rl.run as run_module
from tmrl_vla.envs.spec import EnvSpec
from tmrl_vla.metrics import read_metrics
from tmrl_vla.rl.run import AGENT_DIR, load_frozen_policy, run_rl

# ---------------------------------------------------------------------------------- load_frozen_policy


def env_batch(pre, seed=0):
    """A preprocessed batch of one observation of the pick task."""
    from tmrl_vla.envs.pick_cube import PickCubeConfig, PickCubeEnv
    from tmrl_vla.rollout import obs_to_batch

    env = PickCubeEnv(PickCubeConfig(episode_length=6))
    obs, _ = env.reset(seed=seed)
    task = env.task
    env.close()
    return pre(obs_to_batch({k: v[None] for k, v in obs.items()}, task))


def test_without_an_adapter_the_frozen_policy_is_the_bare_policy_at_sigma_zero(tiny_base_policy):
    from tmrl_vla.csp.policy import CSPPolicy
    from tmrl_vla.policies import load_lerobot_policy

    csp, pre, post = load_frozen_policy(str(tiny_base_policy))
    assert isinstance(csp, CSPPolicy) and csp.merged
    assert callable(pre) and callable(post)
    bare, bare_pre, _ = load_lerobot_policy(tiny_base_policy)
    batch = env_batch(pre)
    config = bare.config
    noise = torch.randn(1, config.chunk_size, config.max_action_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = bare.predict_action_chunk(dict(env_batch(bare_pre)), noise=noise.clone())
        got = csp.predict_action_chunk(dict(batch), sigma=0.0, noise=noise.clone())
        other = csp.predict_action_chunk(dict(batch), sigma=0.0, noise=-noise)
    assert got.shape == expected.shape == (1, config.chunk_size, 6)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(other, expected)  # the noise matters: the comparison means something


def test_with_an_adapter_it_is_loaded_and_merged(tiny_base_policy, tiny_adapter):
    from tmrl_vla.csp.serialization import read_adapter_config

    csp, _, _ = load_frozen_policy(str(tiny_base_policy), str(tiny_adapter))
    assert csp.merged
    saved = read_adapter_config(tiny_adapter)
    assert csp.config.to_dict() == saved["csp"] and csp.config.noise_scale == "none"  # the default is "segment"
    assert csp.base_hash == saved["base_model"]["weights_hash"]
    assert not any(p.requires_grad for p in csp.parameters())  # frozen


# ---------------------------------------------------------------------------------- run_rl


def test_tmrl_without_an_adapter_fails_before_building_anything(tiny_rl, tmp_path, monkeypatch):
    def must_not_load(*args, **kwargs):
        raise AssertionError("the policy was loaded")

    monkeypatch.setattr(run_module, "load_frozen_policy", must_not_load)
    with pytest.raises(ValueError, match=r"TMRL needs a CSP adapter for this policy: pass --csp\.path"):
        run_rl(tiny_rl(), policy="nowhere/policy", adapter=None, env=EnvSpec(), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_dsrl_ignores_the_adapter(tiny_rl, tmp_path, monkeypatch):
    seen = []

    class Stop(Exception):
        pass

    def record(policy, adapter=None, **kwargs):
        seen.append((policy, adapter))
        raise Stop

    monkeypatch.setattr(run_module, "load_frozen_policy", record)
    with pytest.raises(Stop):
        run_rl(tiny_rl(kind="dsrl"), policy="p", adapter="some/adapter", env=EnvSpec(), run_dir=tmp_path)
    with pytest.raises(Stop):
        run_rl(tiny_rl(), policy="p", adapter="some/adapter", env=EnvSpec(), run_dir=tmp_path)
    assert seen == [("p", None), ("p", "some/adapter")]


def test_an_unknown_env_option_fails_before_training(tiny_base_policy, tiny_rl, tmp_path):
    from tmrl_vla.envs.registry import UnknownEnvOptionError

    with pytest.raises(UnknownEnvOptionError, match="image_sise"):
        run_rl(
            tiny_rl(kind="dsrl"),
            policy=str(tiny_base_policy),
            adapter=None,
            env=EnvSpec(options={"image_sise": 64}),
            run_dir=tmp_path / "run",
        )
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def tiny_run(tiny_base_policy, tiny_adapter, tmp_path_factory):
    """(result, run_dir, log lines) of a 2-decision TMRL run on the moved-camera pick task."""
    from conftest import tiny_rl_config

    run_dir = tmp_path_factory.mktemp("run_rl") / "tmrl"
    lines = []
    result = run_rl(
        tiny_rl_config(total_decisions=2, eval_every=2),
        policy=str(tiny_base_policy),
        adapter=str(tiny_adapter),
        env=EnvSpec(shift="moved_camera", episode_length=6),
        run_dir=run_dir,
        log=lines.append,
    )
    return result, run_dir, lines


def test_a_run_writes_metrics_curve_and_the_agent(tiny_run):
    result, run_dir, lines = tiny_run
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["decision"] for r in rows] == [1, 2]
    assert "eval/success_rate" in rows[1] and "eval/success_rate" not in rows[0]
    assert "critic/loss" in rows[1]  # one warm-up decision, then an update
    assert (run_dir / "learning_curve.png").stat().st_size > 1000
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["00000002"]
    assert result["decisions"] == 2 and result["final_eval_success"] == rows[1]["eval/success_rate"]
    assert result["metrics"] == str(run_dir / "metrics.jsonl")
    assert result["policy"] == str(run_dir / AGENT_DIR)
    assert result["episodes_to_80"] is None  # far fewer episodes than the success window
    assert any("so100_pick_cube (shift=moved_camera, episode_length=6)" in line for line in lines)
    hint = f"lerobot-eval --policy.path={run_dir / AGENT_DIR} --env.type=so100_pick_cube --env.shift=moved_camera"
    assert any(hint in line for line in lines)  # the command that runs the result in LeRobot


def test_the_saved_agent_records_the_env_and_the_current_format(tiny_run, tiny_base_policy, tiny_adapter):
    from tmrl_vla.rl.pretrained import TMRLAgent

    result, run_dir, _ = tiny_run
    meta = json.loads((run_dir / AGENT_DIR / "config.json").read_text())
    assert meta["type"] == "tmrl"  # a LeRobot policy: lerobot-eval --policy.path runs it
    results = json.loads((run_dir / AGENT_DIR / "training.json").read_text())["results"]
    assert results["env"] == "so100_pick_cube (shift=moved_camera, episode_length=6)"
    assert results["decisions"] == 2 and results["episodes"] == result["episodes"]
    assert (meta["base_policy"], meta["csp_adapter"]) == ("./base_policy", "./csp_adapter")  # local: embedded
    agent = TMRLAgent.from_pretrained(run_dir / AGENT_DIR)
    assert agent.config.active_heads == ("z", "y", "eps_c") and agent.config.hidden == 16
    card = (run_dir / AGENT_DIR / "README.md").read_text()
    assert "| task | so100_pick_cube (shift=moved_camera, episode_length=6) |" in card
    assert "![Learning curve](learning_curve.png)" in card


def test_a_new_run_into_a_directory_holding_one_is_refused(tiny_run, tiny_base_policy, tiny_adapter):
    from conftest import tiny_rl_config

    _, run_dir, _ = tiny_run
    before = (run_dir / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match=r"already holds a TMRL run; resume it \(--resume\)"):
        run_rl(
            tiny_rl_config(total_decisions=2, eval_every=2),
            policy=str(tiny_base_policy),
            adapter=str(tiny_adapter),
            env=EnvSpec(shift="moved_camera", episode_length=6),
            run_dir=run_dir,
            resume=False,
            log=lambda _: None,
        )
    assert (run_dir / "metrics.jsonl").read_text() == before  # the old run is untouched
