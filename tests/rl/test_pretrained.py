"""Saved high-level agents (tmrl_vla.rl.pretrained): the older formats still load (saving, the
LeRobot policy format, cards and pushes are tested with a real base in tests/policy)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tmrl_vla.rl.agent import build_agent
from tmrl_vla.rl.config import AgentConfig, ObservationConfig, SACConfig
from tmrl_vla.rl.pretrained import CONFIG_FILE, WEIGHTS_FILE, TMRLAgent, read_configs

WIDTHS = {"obs_dim": 10, "action_dim": 6, "embed_dim": 8}

# ---------------------------------------------------------------------------------- read_configs


def format_1_meta() -> dict:
    """A format-1 ``tmrl_config.json``: the run's whole flat config, SAC settings nested."""
    return {
        "tmrl": {
            "agent": "tmrl",
            "tmrl_heads": ["z", "y"],
            "image_grid": 2,
            "obs_encoder": "facebook/dinov2-with-registers-small",
            "normalize_obs": False,
            "n_exec": 4,
            "z_scale": 0.5,
            "hidden": 32,
            "num_critics": 3,
            "init_temperature": 0.1,
            "target_entropy": {"y": -2.0},
            "n_step": 3,
            "updates_per_decision": 8,
            "exploration": "episode",
            "warmup_decisions": 7,
            "replay_capacity": 500,
            "success_buffer": True,
            "num_envs": 8,  # run settings: not part of an agent
            "total_decisions": 100,
            "sac": {"utd": 5, "gamma": 0.9, "batch_size": 64, "tau": 0.01},
        },
        "widths": WIDTHS,
    }


def test_format_1_flat_config_is_split_into_the_three_sections():
    agent, observation, sac = read_configs(format_1_meta())
    assert agent == AgentConfig(
        kind="tmrl",
        heads=("z", "y"),
        n_exec=4,
        z_scale=0.5,
        hidden=32,
        num_critics=3,
        init_temperature=0.1,
        target_entropy={"y": -2.0},
    )
    assert observation == ObservationConfig(
        image_grid=2, encoder="facebook/dinov2-with-registers-small", normalize=False
    )
    assert sac == SACConfig(
        utd=5,
        gamma=0.9,
        batch_size=64,
        tau=0.01,
        n_step=3,
        updates_per_decision=8,
        exploration="episode",
        warmup_decisions=7,
        replay_capacity=500,
        success_buffer=True,
    )


def test_format_1_with_few_fields_takes_the_defaults():
    agent, observation, sac = read_configs({"tmrl": {"agent": "dsrl"}})
    assert agent == AgentConfig(kind="dsrl") and agent.active_heads == ("z",)
    assert observation == ObservationConfig() and sac == SACConfig()


def test_format_1_flat_fields_win_over_the_nested_sac_ones():
    meta = {"tmrl": {"n_step": 3, "sac": {"n_step": 5, "utd": 2}}}
    _, _, sac = read_configs(meta)
    assert (sac.n_step, sac.utd) == (3, 2)


def test_format_2_sections_are_read_as_saved_lists_becoming_tuples():
    meta = {
        "format_version": 2,
        "agent": {"kind": "tmrl", "heads": ["z", "y", "eps_c"], "hidden": 8},
        "observation": {"image_grid": 3},
        "sac": {"n_step": 2},
    }
    agent, observation, sac = read_configs(meta)
    assert agent.heads == ("z", "y", "eps_c") and agent.hidden == 8
    assert observation.image_grid == 3 and sac.n_step == 2


def test_unknown_keys_from_a_newer_version_are_ignored():
    meta = {
        "format_version": 2,
        "agent": {"kind": "dsrl", "future_head_option": 1},
        "observation": {"image_grid": 2, "depth_camera": True},
        "sac": {"gamma": 0.95, "distributional": "c51"},
    }
    agent, observation, sac = read_configs(meta)
    assert agent == AgentConfig(kind="dsrl")
    assert observation == ObservationConfig(image_grid=2)
    assert sac == SACConfig(gamma=0.95)
    old = format_1_meta()
    old["tmrl"]["some_later_flag"] = True
    old["tmrl"]["sac"]["lookahead"] = 3
    assert read_configs(old) == read_configs(format_1_meta())


def test_invalid_saved_values_are_still_refused():
    with pytest.raises(ValueError, match="image_grid must be >= 1, got 0"):
        read_configs({"tmrl": {"image_grid": 0}})


# ---------------------------------------------------------------------------------- saving and loading


def make_agent(kind="tmrl", results=None) -> TMRLAgent:
    config = AgentConfig(kind=kind, heads=("z", "y") if kind == "tmrl" else None, hidden=16, num_critics=2)
    sac, observation = SACConfig(utd=3, gamma=0.97), ObservationConfig(image_grid=2)
    torch.manual_seed(0)
    return TMRLAgent(
        agent=build_agent(config, sac, **WIDTHS),
        config=config,
        observation=observation,
        sac=sac,
        widths=dict(WIDTHS),
        base_policy="someone/base",
        base_weights_hash="0123abcd0123abcd",
        csp_adapter="someone/adapter" if kind == "tmrl" else None,
        results=results,
    )


def assert_same_agent(a: TMRLAgent, b: TMRLAgent) -> None:
    sa, sb = a.agent.state_dict(), b.agent.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert (a.config, a.observation, a.sac, a.widths) == (b.config, b.observation, b.sac, b.widths)
    assert (a.base_policy, a.base_weights_hash, a.csp_adapter, a.results) == (
        b.base_policy,
        b.base_weights_hash,
        b.csp_adapter,
        b.results,
    )


def save_old_format(agent: TMRLAgent, directory: Path) -> Path:
    """``agent`` as the older high-level-only format wrote it (format 2)."""
    from dataclasses import asdict

    from safetensors.torch import save_file

    directory.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in agent.agent.state_dict().items()}, directory / WEIGHTS_FILE)
    meta = {
        "format_version": 2,
        **{
            name: asdict(getattr(agent, attr))
            for name, attr in (("agent", "config"), ("observation", "observation"), ("sac", "sac"))
        },
        "widths": agent.widths,
        "base_policy": {"name_or_path": agent.base_policy, "weights_hash": agent.base_weights_hash},
        "csp_adapter": agent.csp_adapter,
        "results": agent.results,
    }
    (directory / CONFIG_FILE).write_text(json.dumps(meta))
    return directory


def test_an_agent_saved_in_format_2_still_loads(tmp_path):
    agent = make_agent(results={"episodes": 4})
    loaded = TMRLAgent.from_pretrained(save_old_format(agent, tmp_path / "agent"))
    assert_same_agent(loaded, agent)
    features = torch.randn(3, WIDTHS["obs_dim"])
    assert set(loaded.act(features)) == {"z", "y"}
    for head, value in agent.act(features).items():
        assert torch.equal(loaded.act(features)[head], value)


def test_a_directory_without_a_config_is_not_an_agent(tmp_path):
    (tmp_path / WEIGHTS_FILE).write_bytes(b"")
    with pytest.raises(
        FileNotFoundError, match=rf"{tmp_path} is not a TMRL agent: it has no config.json nor {CONFIG_FILE}"
    ):
        TMRLAgent.from_pretrained(tmp_path)


def test_an_agent_saved_in_format_1_still_loads(tmp_path):
    agent = make_agent()
    out = save_old_format(agent, tmp_path / "agent")
    meta = json.loads((out / CONFIG_FILE).read_text())
    flat = {"agent": "tmrl", "tmrl_heads": ["z", "y"], "image_grid": 2, "hidden": 16, "num_critics": 2}
    flat |= {"sac": {"utd": 3, "gamma": 0.97}, "num_envs": 8}
    old = {k: meta[k] for k in ("widths", "base_policy", "csp_adapter")} | {"tmrl": flat}
    (out / CONFIG_FILE).write_text(json.dumps(old))
    loaded = TMRLAgent.from_pretrained(out)
    assert_same_agent(loaded, agent)  # results: absent in the old file, None in both


def test_an_old_agent_loads_by_repo_id_from_the_offline_hub_cache(tmp_path, local_hub):
    agent = make_agent(kind="dsrl")
    local_hub(save_old_format(agent, tmp_path / "agent"), "someone/dsrl-agent")
    loaded = TMRLAgent.from_pretrained("someone/dsrl-agent")
    assert_same_agent(loaded, agent)
    assert loaded.config.active_heads == ("z",) and loaded.csp_adapter is None


def test_the_base_check_compares_weights_hashes(tmp_path):
    out = save_old_format(make_agent(), tmp_path / "agent")
    loaded = TMRLAgent.from_pretrained(out, csp=SimpleNamespace(base_hash="0123abcd0123abcd"))  # the same base
    assert loaded.base_policy == "someone/base"
    with pytest.raises(
        ValueError,
        match=r"trained on base policy 'someone/base' \(weights 0123abcd0123abcd\) but is being attached to "
        r"weights ffff",
    ):
        TMRLAgent.from_pretrained(out, csp=SimpleNamespace(base_hash="ffff"))
    unknown = make_agent()
    unknown.base_weights_hash = None  # nothing recorded: nothing to compare
    unknown.check_base(SimpleNamespace(base_hash="ffff"))


def test_saving_needs_the_base_it_names(tmp_path, local_hub):
    from tmrl_vla.hub import NotInLocalCacheError

    with pytest.raises(NotInLocalCacheError, match="'someone/base' is not a local directory"):
        make_agent().save_pretrained(tmp_path / "agent")  # its processors and features come from the base
