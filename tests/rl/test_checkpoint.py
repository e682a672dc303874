"""TMRL checkpoints (tmrl_vla.rl.checkpoint): which directories count, config differences, and a
capture / restore / save / load round trip on a tiny trainer."""

import dataclasses
import json
import shutil
from dataclasses import asdict

import pytest
import torch

from tmrl_vla.config_tools import config_differences
from tmrl_vla.rl import checkpoint
from tmrl_vla.rl.checkpoint import complete_checkpoints, latest_checkpoint, refuse_existing_run
from tmrl_vla.rl.config import AgentConfig, ObservationConfig, SACConfig, TMRLConfig

# ---------------------------------------------------------------------------------- which checkpoints count


def make_checkpoint(run, name, *, complete=True):
    directory = run / "checkpoints" / name
    directory.mkdir(parents=True)
    (directory / "rank0.safetensors").write_bytes(b"")
    if complete:
        (directory / "complete").write_text(json.dumps({"decision": 0, "world_size": 1}))
    return directory


def test_a_run_without_checkpoints_has_none(tmp_path):
    assert complete_checkpoints(tmp_path) == [] and latest_checkpoint(tmp_path) is None
    assert complete_checkpoints(tmp_path / "missing") == [] and latest_checkpoint(tmp_path / "missing") is None
    (tmp_path / "checkpoints").mkdir()
    assert complete_checkpoints(tmp_path) == [] and latest_checkpoint(tmp_path) is None


def test_only_marked_numbered_checkpoints_count_oldest_first(tmp_path):
    late = make_checkpoint(tmp_path, "00000120")
    early = make_checkpoint(tmp_path, "00000020")
    make_checkpoint(tmp_path, "00000200", complete=False)  # a crash before rank 0 wrote the marker
    make_checkpoint(tmp_path, "nonfinite-00000300")  # a diagnostic snapshot, even if it had a marker
    make_checkpoint(tmp_path, "nonfinite-00000310", complete=False)
    (tmp_path / "checkpoints" / "00000400").write_text("a file, not a directory")
    assert complete_checkpoints(tmp_path) == [early, late]
    assert latest_checkpoint(tmp_path) == late
    assert latest_checkpoint(str(tmp_path)) == late  # a str run directory works too


def test_refuse_existing_run_only_for_a_complete_checkpoint(tmp_path):
    refuse_existing_run(tmp_path / "new")  # nothing there
    make_checkpoint(tmp_path, "00000010", complete=False)
    make_checkpoint(tmp_path, "nonfinite-00000010")
    refuse_existing_run(tmp_path)  # nothing a resume would pick up
    make_checkpoint(tmp_path, "00000005")
    with pytest.raises(FileExistsError, match=r"already holds a TMRL run; resume it \(--resume\) or choose another"):
        refuse_existing_run(tmp_path)


def test_refusal_names_the_run_directory(tmp_path):
    make_checkpoint(tmp_path, "00000001")
    with pytest.raises(FileExistsError) as err:
        refuse_existing_run(tmp_path)
    assert str(err.value).startswith(f"{tmp_path} already holds")


# ---------------------------------------------------------------------------------- config differences


def test_equal_configs_have_no_differences():
    config = asdict(TMRLConfig())
    assert config_differences(config, asdict(TMRLConfig())) == []


def test_nested_fields_are_named_with_dots_and_both_values():
    saved = asdict(TMRLConfig(agent=AgentConfig(hidden=16), sac=SACConfig(gamma=0.9), seed=1))
    mine = asdict(TMRLConfig(agent=AgentConfig(hidden=32), sac=SACConfig(gamma=0.9), seed=2))
    assert config_differences(saved, mine) == ["agent.hidden (16 vs 32)", "seed (1 vs 2)"]


def test_a_tuple_equals_the_list_it_is_saved_as():
    mine = asdict(TMRLConfig(agent=AgentConfig(heads=("z", "y"))))
    saved = json.loads(json.dumps(mine))
    assert saved["agent"]["heads"] == ["z", "y"]
    assert config_differences(saved, mine) == []
    other = asdict(TMRLConfig(agent=AgentConfig(heads=("y", "z"))))
    assert config_differences(saved, other) == ["agent.heads (['z', 'y'] vs ['y', 'z'])"]


def test_total_decisions_is_ignored_by_default_and_ignore_can_be_changed():
    saved, mine = asdict(TMRLConfig(total_decisions=10)), asdict(TMRLConfig(total_decisions=20, seed=3))
    assert config_differences(saved, mine) == ["seed (0 vs 3)"]
    assert config_differences(saved, mine, ignore=("seed",)) == ["total_decisions (10 vs 20)"]
    assert config_differences(saved, mine, ignore=()) == ["seed (0 vs 3)", "total_decisions (10 vs 20)"]
    assert config_differences(saved, mine, ignore=("total_decisions", "seed")) == []


def test_nested_fields_can_be_ignored_by_their_dotted_name():
    saved = asdict(TMRLConfig(sac=SACConfig(batch_size=4)))
    mine = asdict(TMRLConfig(sac=SACConfig(batch_size=8)))
    assert config_differences(saved, mine, ignore=("sac.batch_size",)) == []
    assert config_differences(saved, mine, ignore=("batch_size",)) == ["sac.batch_size (4 vs 8)"]


def test_a_field_missing_from_the_saved_config_counts_at_its_default():
    defaults = asdict(TMRLConfig())
    saved = asdict(TMRLConfig())
    del saved["sac"]["target_subset"], saved["success_window"]
    # without defaults a missing field reads None
    assert config_differences(saved, asdict(TMRLConfig())) == [
        "sac.target_subset (None vs 2)",
        "success_window (None vs 50)",
    ]
    assert config_differences(saved, asdict(TMRLConfig()), defaults=defaults) == []
    changed = asdict(TMRLConfig(sac=SACConfig(target_subset=3)))
    assert config_differences(saved, changed, defaults=defaults) == ["sac.target_subset (2 vs 3)"]


def test_a_saved_value_wins_over_the_default():
    defaults = asdict(TMRLConfig())
    saved = asdict(TMRLConfig(observation=ObservationConfig(image_grid=2)))
    mine = asdict(TMRLConfig())
    assert config_differences(saved, mine, defaults=defaults) == ["observation.image_grid (2 vs 1)"]


def test_a_changed_dict_field_is_reported():
    saved = asdict(TMRLConfig())
    mine = asdict(TMRLConfig(agent=AgentConfig(target_entropy={"eps_c": -10.0})))
    differences = config_differences(saved, mine)
    assert differences and all(d.startswith("agent.target_entropy") for d in differences)
    assert "agent.target_entropy.eps_c (None vs -10.0)" in differences


# ---------------------------------------------------------------------------------- a tiny trainer


def make_trainer(tiny_base_policy, out, **overrides):
    from conftest import make_tiny_trainer

    defaults = dict(total_decisions=3, warmup_decisions=1, eval_every=100, save_every=1)
    return make_tiny_trainer(tiny_base_policy, out, log=lambda _: None, **(defaults | overrides))


@pytest.fixture(scope="module")
def trained(tiny_base_policy, tmp_path_factory):
    """A trainer after 3 decisions (a checkpoint after each), its run directory, and its state."""
    out = tmp_path_factory.mktemp("checkpoint_run") / "run"
    t = make_trainer(tiny_base_policy, out)
    t.train()
    yield t, out
    t.close()


def assert_same(a, b, where="state"):
    """Equal nested dicts / lists / tensors (exactly)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert torch.is_tensor(b) and a.shape == b.shape and torch.equal(a, b), where
    else:
        assert a == b, where


def copy_run(out, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(out, target)
    return target


def test_saves_keep_the_two_newest_complete_checkpoints(trained):
    t, out = trained
    kept = complete_checkpoints(out)
    assert [p.name for p in kept] == ["00000002", "00000003"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["00000002", "00000003"]  # 1 was removed
    assert json.loads((kept[-1] / "complete").read_text()) == {"decision": 3, "world_size": 1}
    assert json.loads((kept[-1] / "config.json").read_text()) == json.loads(json.dumps(asdict(t.config)))
    # no .tmp left
    assert sorted(p.name for p in kept[-1].iterdir()) == ["complete", "config.json", "rank0.safetensors"]


def test_capture_then_restore_into_a_fresh_trainer_gives_the_same_state(trained, tiny_base_policy, tmp_path):
    t, _ = trained
    state = checkpoint.capture(t)
    assert state["decision"] == 3 and state["world_size"] == 1 and len(t.replay) == 6
    fresh = make_trainer(tiny_base_policy, tmp_path / "fresh")
    try:
        before = fresh.agent.state_dict()
        assert not all(torch.equal(before[k], v) for k, v in t.agent.state_dict().items())  # updates moved t
        assert fresh.decision == 0 and len(fresh.replay) == 0 and fresh.collector.next_seed == 0
        checkpoint.restore(fresh, state)
        assert_same(fresh.agent.state_dict(), t.agent.state_dict(), "agent")
        assert_same(fresh.agent.actor_opt.state_dict(), t.agent.actor_opt.state_dict(), "actor_opt")
        assert_same(fresh.agent.critic_opt.state_dict(), t.agent.critic_opt.state_dict(), "critic_opt")
        assert_same(fresh.replay.state_dict(), t.replay.state_dict(), "replay")
        assert fresh.collector.next_seed == t.collector.next_seed > 0
        assert fresh.collector.episodes_finished == t.collector.episodes_finished > 0
        assert fresh.collector.successes == t.collector.successes
        assert torch.equal(fresh.collector.generator.get_state(), t.collector.generator.get_state())
        assert torch.equal(fresh.generator.get_state(), t.generator.get_state())
        assert (fresh.decision, fresh.episodes, fresh.successes) == (t.decision, t.episodes, t.successes)
        assert list(fresh.recent) == list(t.recent) and len(fresh.recent) == t.episodes
        assert fresh.agent.actor.normalize.ready  # the frozen observation statistics came along
        assert_same(checkpoint.capture(fresh), state)  # and capturing it again gives the same state
    finally:
        fresh.close()


def test_restore_into_a_trainer_that_ran_on_rolls_it_back(tiny_base_policy, tmp_path):
    t = make_trainer(tiny_base_policy, tmp_path / "run", total_decisions=2, save_every=100)
    try:
        t.train()
        state = checkpoint.capture(t)
        t.config = dataclasses.replace(t.config, total_decisions=3)
        t.train()
        checkpoint.restore(t, state)
        assert t.decision == 2 and len(t.replay) == 4
        assert list(t.recent) == state["recent"]
    finally:
        t.close()


def test_a_new_trainer_on_the_run_resumes_from_the_newest_checkpoint(trained, tiny_base_policy, tmp_path):
    t, out = trained
    resumed = make_trainer(tiny_base_policy, copy_run(out, tmp_path))
    try:
        assert (resumed.decision, resumed.episodes, resumed.successes) == (3, t.episodes, t.successes)
        assert_same(resumed.agent.state_dict(), t.agent.state_dict(), "agent")
        assert_same(resumed.replay.state_dict(), t.replay.state_dict(), "replay")
        assert resumed.collector.next_seed == t.collector.next_seed
    finally:
        resumed.close()


def test_load_drops_metrics_rows_after_the_checkpoint(trained, tiny_base_policy, tmp_path):
    _, out = trained
    run = copy_run(out, tmp_path)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["decision"] for r in rows] == [1, 2, 3]
    shutil.rmtree(run / "checkpoints" / "00000003")  # as if the run died before its last checkpoint
    resumed = make_trainer(tiny_base_policy, run)
    try:
        assert resumed.decision == 2 and len(resumed.replay) == 4
        kept = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert kept == rows[:2]  # rows 1 and 2 unchanged, row 3 gone
    finally:
        resumed.close()


def test_load_refuses_another_number_of_processes_naming_both(trained, tiny_base_policy, tmp_path):
    _, out = trained
    run = copy_run(out, tmp_path)
    marker = run / "checkpoints" / "00000003" / "complete"
    marker.write_text(json.dumps({"decision": 3, "world_size": 2}))
    with pytest.raises(ValueError, match=r"written by 2 process\(es\) and this run has 1: each process owns a replay"):
        make_trainer(tiny_base_policy, run)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3  # nothing was dropped


def test_load_refuses_another_config_naming_the_dotted_field(trained, tiny_base_policy, tmp_path):
    _, out = trained
    with pytest.raises(ValueError, match=r"fields that differ: sac\.gamma \(0\.99 vs 0\.9\)$"):
        make_trainer(tiny_base_policy, copy_run(out, tmp_path), gamma=0.9)


def test_a_tagged_save_is_never_resumed(trained, tiny_base_policy, tmp_path):
    _, out = trained
    run = copy_run(out, tmp_path)
    t = make_trainer(tiny_base_policy, run)
    try:
        t.decision = 7  # as if it had stopped later on a non-finite loss
        tagged = checkpoint.save(t, tag="nonfinite")
        assert tagged.name == "nonfinite-00000007"
        assert sorted(p.name for p in tagged.iterdir()) == ["config.json", "rank0.safetensors"]  # no marker
        assert latest_checkpoint(run).name == "00000003"
        assert [p.name for p in complete_checkpoints(run)] == ["00000002", "00000003"]
    finally:
        t.close()
