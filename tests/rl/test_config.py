"""The RL configs (tmrl_vla.rl.config): heads, validation, and the rule that every field is documented."""

import ast
import dataclasses
import inspect
import io
import tokenize
from pathlib import Path

import pytest

from tmrl_vla.rl import config as config_module
from tmrl_vla.rl.config import HEADS, AgentConfig, ObservationConfig, SACConfig, TMRLConfig

# ---------------------------------------------------------------------------------- active heads


def test_tmrl_defaults_to_all_three_heads():
    assert AgentConfig().heads is None
    assert AgentConfig().active_heads == HEADS == ("z", "y", "eps_c")


@pytest.mark.parametrize("heads", [("z", "y"), ("y", "z"), ("z", "y", "eps_c"), ("eps_c", "z", "y")])
def test_tmrl_heads_subset_is_kept_in_its_order(heads):
    assert AgentConfig(heads=heads).active_heads == heads


def test_heads_given_as_a_list_come_back_as_a_tuple():
    active = AgentConfig(heads=["z", "y"]).active_heads
    assert active == ("z", "y") and isinstance(active, tuple)


@pytest.mark.parametrize("heads", [None, ("z", "y"), ("z", "y", "eps_c")])
def test_dsrl_has_only_z_whatever_heads_says(heads):
    assert AgentConfig(kind="dsrl", heads=heads).active_heads == ("z",)


def test_dsrl_with_only_z_named_in_heads_is_accepted():
    assert AgentConfig(kind="dsrl", heads=("z",)).active_heads == ("z",)


# ---------------------------------------------------------------------------------- AgentConfig errors


def test_unknown_head_names_it_and_gives_the_command_line_hint():
    with pytest.raises(ValueError, match=r"unknown heads \['sigma'\].*--rl\.agent\.heads=\[z,y\]"):
        AgentConfig(heads=("z", "sigma"))


def test_a_bare_comma_string_split_into_characters_is_caught():
    # "z,y" without brackets on the command line becomes the characters 'z', ',', 'y'
    with pytest.raises(ValueError, match=r"unknown heads \[','\]"):
        AgentConfig(heads=tuple("z,y"))


@pytest.mark.parametrize("heads", [("z",), ("y",), ("z", "eps_c"), ("y", "eps_c"), ()])
def test_tmrl_needs_z_and_y(heads):
    with pytest.raises(ValueError, match=r"TMRL needs the 'z' and 'y' heads \(eps_c is optional\)"):
        AgentConfig(heads=heads)


def test_unknown_kind_is_refused_with_its_value():
    with pytest.raises(ValueError, match=r"agent kind must be 'tmrl' or 'dsrl', got 'sac'"):
        AgentConfig(kind="sac")


@pytest.mark.parametrize("field", ["n_exec", "hidden", "num_critics"])
@pytest.mark.parametrize("value", [0, -1])
def test_sizes_below_one_are_refused(field, value):
    with pytest.raises(ValueError, match="n_exec, hidden and num_critics must be >= 1"):
        AgentConfig(**{field: value})


def test_sizes_of_one_are_accepted():
    config = AgentConfig(n_exec=1, hidden=1, num_critics=1)
    assert (config.n_exec, config.hidden, config.num_critics) == (1, 1, 1)


@pytest.mark.parametrize("value", [0.0, -0.1])
def test_init_temperature_must_be_positive(value):
    with pytest.raises(ValueError, match=rf"init_temperature must be > 0, got {value}"):
        AgentConfig(init_temperature=value)


def test_agent_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        AgentConfig().hidden = 3


# ---------------------------------------------------------------------------------- ObservationConfig


@pytest.mark.parametrize("grid", [0, -2])
def test_image_grid_below_one_is_refused(grid):
    with pytest.raises(ValueError, match=rf"image_grid must be >= 1, got {grid}"):
        ObservationConfig(image_grid=grid)


def test_observation_defaults():
    assert ObservationConfig() == ObservationConfig(image_grid=1, encoder=None, normalize=True)
    assert ObservationConfig(image_grid=3).image_grid == 3


# ---------------------------------------------------------------------------------- SACConfig


@pytest.mark.parametrize("overrides", [{"gamma": 0.0}, {"gamma": 1.5}, {"tau": 0.0}, {"tau": -0.1}, {"tau": 1.01}])
def test_gamma_and_tau_lie_in_zero_one(overrides):
    with pytest.raises(ValueError, match=r"gamma and tau must lie in \(0, 1\]"):
        SACConfig(**overrides)


def test_gamma_and_tau_of_one_are_accepted():
    assert (SACConfig(gamma=1.0, tau=1.0).gamma, SACConfig(gamma=1.0, tau=1.0).tau) == (1.0, 1.0)


def test_target_subset_must_be_positive_or_none():
    with pytest.raises(ValueError, match="target_subset must be >= 1 or None"):
        SACConfig(target_subset=0)
    assert SACConfig(target_subset=None).target_subset is None


@pytest.mark.parametrize("field", ["utd", "batch_size", "n_step", "replay_capacity"])
def test_counts_below_one_are_refused(field):
    with pytest.raises(ValueError, match="utd, batch_size, n_step and replay_capacity must be >= 1"):
        SACConfig(**{field: 0})


@pytest.mark.parametrize("field", ["warmup_decisions", "updates_per_decision", "critic_pretrain_updates"])
def test_negative_warmup_or_updates_are_refused_but_zero_is_fine(field):
    with pytest.raises(ValueError, match=f"{field} must be >= 0, got -1"):
        SACConfig(**{field: -1})
    assert getattr(SACConfig(**{field: 0}), field) == 0


def test_negative_imitation_weight_is_refused():
    with pytest.raises(ValueError, match=r"imitation_weight must be >= 0, got -0.5"):
        SACConfig(imitation_weight=-0.5)


def test_unknown_exploration_is_refused_with_its_value():
    with pytest.raises(ValueError, match=r"exploration must be 'decision' or 'episode', got 'chunk'"):
        SACConfig(exploration="chunk")


@pytest.mark.parametrize(
    ("success_buffer", "imitation_weight", "keeps"),
    [(False, 0.0, False), (True, 0.0, True), (False, 0.1, True), (True, 2.0, True)],
)
def test_keeps_successes_for_the_success_buffer_or_self_imitation(success_buffer, imitation_weight, keeps):
    config = SACConfig(success_buffer=success_buffer, imitation_weight=imitation_weight)
    assert config.keeps_successes is keeps


# ---------------------------------------------------------------------------------- TMRLConfig


@pytest.mark.parametrize("field", ["num_envs", "total_decisions", "eval_every", "save_every", "success_window"])
def test_run_counts_below_one_are_refused(field):
    with pytest.raises(ValueError, match="num_envs, total_decisions, eval_every, save_every and success_window"):
        TMRLConfig(**{field: 0})


def test_negative_eval_episodes_are_refused_and_zero_turns_evaluation_off():
    with pytest.raises(ValueError, match=r"eval_episodes must be >= 0 \(0: no evaluations\), got -1"):
        TMRLConfig(eval_episodes=-1)
    assert TMRLConfig(eval_episodes=0).eval_episodes == 0


def test_sections_default_to_fresh_defaults_and_are_kept_when_given():
    config = TMRLConfig()
    assert (config.agent, config.observation, config.sac) == (AgentConfig(), ObservationConfig(), SACConfig())
    agent = AgentConfig(kind="dsrl", hidden=8)
    assert TMRLConfig(agent=agent).agent is agent


def test_an_invalid_section_fails_when_the_run_config_is_built():
    with pytest.raises(ValueError, match="image_grid must be >= 1"):
        TMRLConfig(observation=ObservationConfig(image_grid=0))


def test_the_tiny_test_config_is_valid_and_small(tiny_rl):
    config = tiny_rl(kind="dsrl", total_decisions=5)
    assert config.agent.active_heads == ("z",) and config.total_decisions == 5
    assert config.agent.hidden == 16 and config.sac.batch_size == 4 and config.num_envs == 2


# ---------------------------------------------------------------------------------- field comments

CONFIG_CLASSES = ("AgentConfig", "ObservationConfig", "SACConfig", "TMRLConfig")


def undocumented_fields(source: str, class_name: str) -> list[str]:
    """The fields of ``class_name`` in ``source`` with no comment on their line(s) nor on the
    comment-only line(s) directly above them."""
    lines = source.splitlines()
    commented = {
        tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT
    }
    (cls,) = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == class_name]
    missing = []
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        inline = any(n in commented for n in range(node.lineno, node.end_lineno + 1))
        above = node.lineno - 1  # 1-based number of the line above
        documented_above = above >= 1 and lines[above - 1].strip().startswith("#")
        if not (inline or documented_above):
            missing.append(node.target.id)
    return missing


def test_the_comment_check_finds_an_undocumented_field():
    source = (
        "class C:\n"
        "    # documented above,\n"
        "    # over two lines\n"
        "    a: int = 1\n"
        "    b: int = 2  # documented inline\n"
        "    c: str = '# not a comment'\n"
        "    d: int = 4\n"
        "\n"
        "    def method(self) -> None:\n"
        "        e: int = 5\n"
    )
    assert undocumented_fields(source, "C") == ["c", "d"]


SOURCE = Path(inspect.getsourcefile(config_module)).read_text()


def field_params():
    return [
        pytest.param(name, f.name, id=f"{name}.{f.name}")
        for name in CONFIG_CLASSES
        for f in dataclasses.fields(getattr(config_module, name))
    ]


@pytest.mark.parametrize(("class_name", "field_name"), field_params())
def test_every_config_field_has_a_comment_in_the_source(class_name, field_name):
    assert field_name not in undocumented_fields(SOURCE, class_name)


def test_the_comment_check_sees_every_dataclass_field():
    """Every field the dataclasses have is an annotated assignment the check inspects."""
    for name in CONFIG_CLASSES:
        tree = ast.parse(SOURCE)
        (cls,) = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name]
        annotated = [n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)]
        assert annotated == [f.name for f in dataclasses.fields(getattr(config_module, name))], name


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(init_sigma=0.0), "init_sigma must lie strictly between 0 and 1"),
        (dict(init_sigma=1.5), "init_sigma must lie strictly between 0 and 1"),
        (dict(init_std=0.0), "init_std must be > 0"),
        (dict(sigma_centre=0.0), "sigma_centre must lie strictly between 0 and 1"),
        (dict(sigma_centre=1.0), "sigma_centre must lie strictly between 0 and 1"),
    ],
)
def test_agent_start_options_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        AgentConfig(**options)


def test_warmup_heads_must_be_a_known_draw():
    with pytest.raises(ValueError, match="warmup_heads must be 'uniform' or 'prior'"):
        SACConfig(warmup_heads="base")
