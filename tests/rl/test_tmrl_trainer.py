import json

import pytest

from tmrl_vla.config_tools import config_differences
from tmrl_vla.csp.policy import CSPPolicy
from tmrl_vla.envs.pick_cube import PickCubeConfig, PickCubeEnv
from tmrl_vla.rl.config import AgentConfig, SACConfig, TMRLConfig
from tmrl_vla.rl.trainer import TMRLTrainer


def trainer(tiny_base_policy, out, **overrides):
    from conftest import make_tiny_trainer

    defaults = dict(total_decisions=4, warmup_decisions=2, eval_every=4, sac=SACConfig(utd=2, batch_size=4))
    return make_tiny_trainer(tiny_base_policy, out, **(defaults | overrides))


def test_smoke_then_resume_continues_where_it_stopped(tiny_base_policy, tmp_path):
    t = trainer(tiny_base_policy, tmp_path)
    result = t.train()
    assert result["decisions"] == 4 and len(t.replay) == 8
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["decision"] for r in rows] == [1, 2, 3, 4]
    assert "critic/loss" not in rows[1] and "critic/loss" in rows[2]  # updates start after the warm-up
    assert rows[3]["eval/success_rate"] * 2 in (0.0, 1.0, 2.0)  # 2 evaluation episodes
    seed_after = t.collector.next_seed
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"decision": 5, "rollout/epis')  # a row torn by a crash mid-write

    resumed = trainer(tiny_base_policy, tmp_path, total_decisions=6)
    assert resumed.decision == 4 and len(resumed.replay) == 8 and resumed.collector.next_seed == seed_after
    resumed.train()
    resumed.close()
    assert resumed.decision == 6 and len(resumed.replay) == 12 and resumed.replay.total_added == 12
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["decision"] for r in rows] == [1, 2, 3, 4, 5, 6]


def test_resume_from_another_config_names_the_fields(tiny_base_policy, tmp_path):
    trainer(tiny_base_policy, tmp_path, total_decisions=2).train()
    with pytest.raises(ValueError, match="hidden"):
        trainer(tiny_base_policy, tmp_path, hidden=32)


def test_a_checkpoint_from_before_a_new_option_still_resumes():
    """Options added later default to the old behaviour: a saved config that lacks one (here a nested
    SAC field) matches while the option keeps its default, and differs once it is set."""
    from dataclasses import asdict, replace

    config = TMRLConfig(agent=AgentConfig(heads=("z", "y")))
    saved = asdict(config)
    del saved["sac"]["imitation_weight"]
    saved["agent"]["heads"] = ["z", "y"]  # as read back from JSON
    defaults = asdict(TMRLConfig())
    assert config_differences(saved, asdict(config), defaults=defaults) == []
    changed = replace(config, sac=replace(config.sac, imitation_weight=0.5))
    differences = config_differences(saved, asdict(changed), defaults=defaults)
    assert differences == ["sac.imitation_weight (0.0 vs 0.5)"]


def test_dsrl_is_the_same_loop_with_only_z(tiny_base_policy, tmp_path):
    t = trainer(tiny_base_policy, tmp_path, kind="dsrl", total_decisions=3)
    t.train()
    assert set(t.replay.actions) == {"z"} and set(t.agent.actor.config.heads) == {"z"}
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["actor/sigma_mean"] == 0.0 for r in rows)
    assert not any(k.endswith(("_y", "_eps_c")) for r in rows for k in r)


def test_evaluation_leaves_the_training_stream_alone(tiny_base_policy, tmp_path):
    """Evaluating more often must not change what the agent trains on: the CSP context noise (no
    eps_c head, so the CSP policy draws it) comes from each collector's own generator."""
    import torch

    def replay(eval_every, out):
        t = trainer(tiny_base_policy, out, heads=("z", "y"), total_decisions=4, eval_every=eval_every)
        t.train()
        t.close()
        assert (t.replay.actions["y"][: len(t.replay)] > -1).any()  # sigma > 0: context noise was drawn
        state = t.replay.state_dict()
        return {"obs": state["obs"], "next_obs": state["next_obs"], "reward": state["reward"]} | state["actions"]

    rarely, often = replay(4, tmp_path / "a"), replay(1, tmp_path / "b")
    assert rarely.keys() == often.keys() == {"obs", "next_obs", "reward", "z", "y"}
    for key in rarely:
        assert torch.equal(rarely[key], often[key]), key


def test_a_separate_observation_encoder_replaces_the_pooled_prefix(
    tiny_base_policy, tiny_adapter, tiny_dinov2, tmp_path
):
    import torch

    from tmrl_vla.envs.batched import BatchedEnv
    from tmrl_vla.rl.pretrained import TMRLAgent

    path = str(tiny_dinov2[0])
    t = trainer(tiny_base_policy, tmp_path / "run", encoder=path, image_grid=2, total_decisions=2, eval_every=2)
    assert t.agent.actor.config.obs_dim == 2 * 2 * 16 + 6  # one camera, 2 x 2 cells of the encoder's width, state
    t.train()
    t.close()
    # the first stored observations are the encoder's features of the first reset, then the state
    envs = BatchedEnv(t.make_env, 2)
    batch = t.collector._batch(envs.reset([0, 1]))  # seed 0: the run's episode seeds start at 0
    envs.close()
    expected = torch.cat([t.collector.encoder([batch["observation.images.front"]], 2), batch["observation.state"]], -1)
    torch.testing.assert_close(t.replay.obs[:2], expected)

    saved = TMRLAgent.from_trainer(t, base_policy=str(tiny_base_policy), csp_adapter=str(tiny_adapter))
    saved = saved.save_pretrained(tmp_path / "agent")
    loaded = TMRLAgent.from_pretrained(saved)
    assert loaded.observation.encoder == path and loaded.observation_encoder() is not None
    assert (
        f"`{path}` (separate frozen encoder), image tokens pooled on a 2 x 2 grid" in (saved / "README.md").read_text()
    )
    import importlib.util
    from pathlib import Path

    # the eval script rebuilds the observation from the agent's config
    script = Path(__file__).parents[2] / "eval" / "sigma_trace.py"
    spec = importlib.util.spec_from_file_location("sigma_trace", script)
    sigma_trace = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sigma_trace)
    from argparse import Namespace

    args = Namespace(agent=str(saved), episodes=1, shift="moved_camera", seed=9, stochastic=False, episode_length=6)
    (record,) = sigma_trace.trace(args)
    assert record["length"] == 2


def run_script(tiny_base_policy, out, total, *, processes=1):
    import os
    import sys
    from pathlib import Path

    script = str(Path(__file__).with_name("tmrl_run.py"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    launcher = [sys.executable]
    if processes > 1:  # accelerate's `launch --cpu --num_processes 2` silently runs one; torchrun runs two
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    cmd = launcher + [script, str(tiny_base_policy), str(out), str(total)]
    return cmd, env


def test_sigkill_mid_training_resumes_without_lost_transitions(tiny_base_policy, tmp_path, monkeypatch):
    import runpy
    import signal
    import subprocess
    import time

    cmd, env = run_script(tiny_base_policy, tmp_path, 40)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline:  # kill once a few decisions are on disk
        time.sleep(0.5)
        if len(list(checkpoints.glob("*/complete"))) >= 2:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "result0.json").exists()  # it really died mid-run
    latest = sorted(p.parent for p in checkpoints.glob("*/complete"))[-1]
    from tmrl_vla.state_io import load_state

    killed_at = load_state(latest / "rank0.safetensors")["decision"]
    assert 0 < killed_at < 40
    assert json.loads((latest / "config.json").read_text())["total_decisions"] == 40  # config beside the checkpoint
    total = killed_at + 2
    monkeypatch.setattr("sys.argv", cmd[1:-1] + [str(total)])  # the resume runs in this process
    runpy.run_path(cmd[1], run_name="__main__")
    result = json.loads((tmp_path / "result0.json").read_text())
    # every decision from 1 to the end contributed exactly num_envs transitions, none lost, none doubled
    assert result["decisions"] == total and result["replay_added"] == total * 2
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["decision"] for r in rows] == list(range(1, total + 1))  # rows after the checkpoint were rewritten
    assert len(list(checkpoints.glob("*/complete"))) == 2  # older checkpoints are pruned


def test_two_processes_train_one_policy_on_their_own_envs(tiny_base_policy, tmp_path):
    import subprocess

    cmd, env = run_script(tiny_base_policy, tmp_path, 5, processes=2)
    subprocess.run(cmd, env=env, check=True, timeout=300)
    ranks = [json.loads((tmp_path / f"result{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights_sum"] == ranks[1]["weights_sum"]  # gradients averaged: equal weights
    assert ranks[0]["weights_abs_sum"] == ranks[1]["weights_abs_sum"]
    assert ranks[0]["first_obs"] != ranks[1]["first_obs"]  # each rank ran its own episodes
    assert all(r["replay_added"] == 5 * 2 for r in ranks)  # its own replay shard
    latest = tmp_path / "checkpoints" / f"{5:08d}"
    assert json.loads((latest / "complete").read_text())["world_size"] == 2
    assert (latest / "rank0.safetensors").exists() and (latest / "rank1.safetensors").exists()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 5  # rank 0 logs, once per decision


def test_nan_loss_stops_with_a_checkpoint_and_no_step(tiny_base_policy, tmp_path):
    import dataclasses

    import torch

    t = trainer(tiny_base_policy, tmp_path, total_decisions=3, eval_every=100)
    t.train()  # past the warm-up: updates ran and the observation statistics are frozen
    assert t.agent.actor.normalize.ready
    before = {k: v.clone() for k, v in t.agent.state_dict().items()}
    t.replay.reward[: len(t.replay)] = float("nan")
    t.config = dataclasses.replace(t.config, total_decisions=5)
    with pytest.raises(RuntimeError, match="not finite") as err:
        t.train()
    t.close()
    saved = list((tmp_path / "checkpoints").glob("nonfinite-*"))
    assert len(saved) == 1 and str(saved[0]) in str(err.value)
    after = t.agent.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no optimiser step on the NaN loss


def test_env_with_another_action_dimension_is_refused(tiny_base_policy, tmp_path):
    import gymnasium as gym
    import numpy as np

    class SevenJoints(gym.Wrapper):
        def __init__(self, env):
            super().__init__(env)
            self.action_space = gym.spaces.Box(-1, 1, (7,), np.float32)

    from tmrl_vla.policies import load_lerobot_policy

    policy, pre, post = load_lerobot_policy(tiny_base_policy)
    with pytest.raises(ValueError, match="7 dimensions but the policy outputs 6"):
        TMRLTrainer(
            TMRLConfig(num_envs=1, agent=AgentConfig(hidden=16, num_critics=2)),
            csp=CSPPolicy.from_base(policy),
            preprocessor=pre,
            postprocessor=post,
            make_env=lambda: SevenJoints(PickCubeEnv(PickCubeConfig(episode_length=6))),
            out_dir=tmp_path,
        )


def test_agent_saves_and_loads_with_its_card(tiny_base_policy, tiny_adapter, tmp_path):
    import torch

    from tmrl_vla.rl.pretrained import TMRLAgent

    t = trainer(tiny_base_policy, tmp_path / "run", total_decisions=3, eval_every=100)
    t.train()
    t.close()
    saved = TMRLAgent.from_trainer(t, base_policy=str(tiny_base_policy), csp_adapter=str(tiny_adapter))
    directory = saved.save_pretrained(tmp_path / "agent")
    card = (directory / "README.md").read_text()
    assert "TMRL agent for a LeRobot VLA" in card and "z, y, eps_c" in card
    assert "the VLA's clean prefix, image tokens pooled on a 1 x 1 grid" in card
    loaded = TMRLAgent.from_pretrained(directory, csp=t.collector.csp)
    features = torch.randn(3, saved.widths["obs_dim"])
    for head, value in saved.act(features).items():
        assert torch.equal(value, loaded.act(features)[head])
    assert (loaded.config, loaded.observation, loaded.sac) == (t.config.agent, t.config.observation, t.config.sac)
    assert loaded.csp_adapter == str(directory / "csp_adapter")  # embedded: it was a local directory

    from tmrl_vla.models.tiny_smolvla import make_tiny_smolvla

    other = CSPPolicy.from_base(make_tiny_smolvla())
    with pytest.raises(ValueError, match="trained on base policy"):
        TMRLAgent.from_pretrained(directory, csp=other)


def patch_even_seed_episodes(monkeypatch, *, driven_by_a_person: bool = False):
    """Episodes with even seeds succeed on their 4th step, the others time out; with
    ``driven_by_a_person``, every step of the even-seed episodes is a person's (info["intervention"])."""
    real_reset, real_step = PickCubeEnv.reset, PickCubeEnv.step
    marks = {"intervention": True} if driven_by_a_person else {}

    def reset(self, *, seed=None, options=None):
        self.test_seed = seed
        return real_reset(self, seed=seed, options=options)

    def step(self, action):
        obs, r, term, trunc, info = real_step(self, action)
        if self.test_seed % 2 == 0:
            if self._t >= 4:
                return obs, 1.0, True, False, {"is_success": True, **marks}
            info = {**info, **marks}
        return obs, r, term, trunc, info

    monkeypatch.setattr(PickCubeEnv, "reset", reset)
    monkeypatch.setattr(PickCubeEnv, "step", step)


@pytest.fixture
def even_seeds_succeed(monkeypatch):
    """Episodes with even seeds succeed on their 4th step, the others time out."""
    patch_even_seed_episodes(monkeypatch)


def test_success_buffer_keeps_whole_successful_episodes(tiny_base_policy, tmp_path, even_seeds_succeed):
    t = trainer(tiny_base_policy, tmp_path, total_decisions=3, eval_every=100, success_buffer=True)
    t.train()
    t.close()
    assert t.successes > 0 and t.episodes > t.successes  # both kinds happened
    assert len(t.success_replay) == t.successes  # each success ended its episode's first decision
    assert t.success_replay.done[: len(t.success_replay)].sum() == t.successes

    resumed = trainer(tiny_base_policy, tmp_path, total_decisions=3, eval_every=100, success_buffer=True)
    assert len(resumed.success_replay) == len(t.success_replay)
    # The resumed run starts fresh episodes: the interrupted ones can no longer succeed.
    assert any(t.success_episodes.open) and not any(resumed.success_episodes.open)
    resumed.close()


def test_self_imitation_keeps_successes_without_mixing_batches(tiny_base_policy, tmp_path, even_seeds_succeed):
    sac = SACConfig(utd=1, batch_size=4, imitation_weight=1.0)
    t = trainer(tiny_base_policy, tmp_path, total_decisions=8, warmup_decisions=2, eval_every=100, sac=sac)
    t.train()
    t.close()
    assert t.successes > 0 and len(t.success_replay) > 0
    assert t.sampler is t.replay  # critic batches come from the main buffer alone
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # updates after the first success carry the imitation term's NLL
    assert any("actor/imitation_nll" in r for r in rows)


def test_evaluation_counts_a_fixed_share_of_episodes_per_env(tiny_base_policy, tmp_path, even_seeds_succeed):
    """Env 0 starts on an even seed (quick success), env 1 on an odd one (time-out). Counting the
    first endings would score the quick successes twice before the slow failure ends (2/3 for two
    episodes); one episode per env is the unbiased 1/2."""
    t = trainer(tiny_base_policy, tmp_path)
    assert t.evaluate(2) == 0.5
    t.close()


def test_n_step_rows_reach_the_replay_and_a_resume_loses_none(tiny_base_policy, tmp_path):
    import torch

    t = trainer(tiny_base_policy, tmp_path, total_decisions=3, save_every=3, n_step=2)
    t.train()
    t.close()
    steps = t.replay.steps[: len(t.replay)]
    assert steps.max() == 2 and steps.min() == 1  # full n-step rows, and shorter ones at episode ends
    waiting = sum(len(p) for p in t.nstep.pending)
    assert t.replay.total_added + waiting == 3 * 2  # every decision of both envs is in one place or the other
    assert waiting > 0  # episodes of 6 steps, 5 per decision: the third decision's rows still wait
    resumed = trainer(tiny_base_policy, tmp_path, total_decisions=3, save_every=3, n_step=2)
    assert resumed.replay.total_added == 3 * 2  # the interrupted episodes' rows were flushed, not lost
    assert torch.equal(resumed.replay.obs[: t.replay.total_added], t.replay.obs[: t.replay.total_added])
    resumed.close()


def test_head_names_are_checked_with_a_hint_for_the_command_line():
    with pytest.raises(ValueError, match=r"--rl.agent.heads=\[z,y\]"):
        AgentConfig(heads=tuple("z,y"))  # what a bare "z,y" string becomes
    with pytest.raises(ValueError, match="exploration"):
        SACConfig(exploration="chunk")
    with pytest.raises(ValueError, match="n_step"):
        SACConfig(n_step=0)


def test_robot_options_no_evaluation_checkpoint_per_episode_and_updates_at_its_end(tiny_base_policy, tmp_path):
    """What a robot run asks of the loop: no evaluation episodes, a checkpoint whenever an episode
    ends, and the SAC updates of an episode's decisions run when it ends, none mid-episode."""
    calls = []
    options = dict(save_at_episode_end=True, updates_at_episode_end=True)
    t = trainer(
        tiny_base_policy, tmp_path, num_envs=1, total_decisions=5, eval_episodes=0, save_every=100,
        warmup_decisions=1, trainer_options=options,
    )  # fmt: skip
    real_update = t.agent.update
    t.agent.update = lambda *a, **k: calls.append(t.decision) or real_update(*a, **k)
    t.train()
    t.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert not any("eval/success_rate" in r for r in rows)
    previous = [{"rollout/episodes": 0}] + rows
    ended = [
        r["decision"] for r, p in zip(rows, previous[:-1], strict=True) if r["rollout/episodes"] > p["rollout/episodes"]
    ]
    assert ended == [2, 4]  # 6-step episodes, 5 actions per decision
    # the updates owed since the warm-up (or the last payment) are paid at each episode's end
    per_decision = t.config.sac.updates_per_decision
    assert calls == [2] * per_decision * 1 + [4] * per_decision * 2 + [5] * per_decision  # the last pays too
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert saved[-1] == "00000005" and "00000004" in saved  # every episode end, and the last decision
    assert (tmp_path / "learning_curve.png").exists()


def test_should_stop_ends_the_run_early_with_a_checkpoint(tiny_base_policy, tmp_path):
    stop = {"now": False}
    t = trainer(
        tiny_base_policy, tmp_path, total_decisions=10, save_every=100,
        trainer_options=dict(should_stop=lambda: stop["now"]),
    )  # fmt: skip
    real_collect = t.collect
    t.collect = lambda **k: stop.update(now=t.decision >= 2) or real_collect(**k)
    result = t.train()
    t.close()
    assert result["decisions"] == 3
    assert (tmp_path / "checkpoints" / "00000003" / "complete").exists()


def test_decisions_a_person_drove_are_not_the_agents(tiny_base_policy, tmp_path, monkeypatch):
    """Episodes with even seeds: a person takes over from the first step and succeeds on the 4th."""
    patch_even_seed_episodes(monkeypatch, driven_by_a_person=True)
    t = trainer(tiny_base_policy, tmp_path, total_decisions=4, eval_every=100, success_buffer=True, n_step=1)
    driven = []
    real_collect_step = t.collector.step
    t.collector.step = lambda **k: (lambda tr: driven.append(int(tr.intervened.sum())) or tr)(real_collect_step(**k))
    t.train()
    t.close()
    assert t.successes > 0 and sum(driven) > 0  # the person drove and succeeded
    assert t.replay.total_added == 2 * 4 - sum(driven)  # their decisions never reached the replay
    assert len(t.success_replay) == 0  # and their successes are not the agent's


def test_a_prior_warmup_plays_the_actors_start_then_hands_over_to_the_actor(tiny_base_policy, tmp_path):
    """With ``warmup_heads="prior"`` the warm-up decisions are drawn at the configured start (here a
    narrow one at sigma 0.1), and the actor's own first decisions begin from that same start."""
    t = trainer(
        tiny_base_policy,
        tmp_path,
        total_decisions=3,
        warmup_decisions=2,
        agent=AgentConfig(heads=("z", "y"), hidden=16, num_critics=2, init_sigma=0.1, init_std=0.01),
        sac=SACConfig(utd=1, batch_size=4, warmup_heads="prior", updates_per_decision=0),
    )
    t.train()
    t.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["actor/sigma_mean"] for r in rows[:2]] == pytest.approx([0.1, 0.1], abs=0.01)
    # no updates: the actor's decision differs from its start only by what the state adds to the biases
    assert abs(rows[2]["actor/sigma_mean"] - 0.1) < 0.1


def test_critic_pretraining_runs_once_before_the_first_actor_update_and_not_again_after_a_resume(
    tiny_base_policy, tmp_path
):
    def critic_steps(t) -> int:
        return int(next(iter(t.agent.critic_opt.state.values()))["step"])

    def actor_steps(t) -> int:
        return int(next(iter(t.agent.actor_opt.state.values()))["step"])

    sac = SACConfig(utd=2, batch_size=4, critic_pretrain_updates=5)
    t = trainer(tiny_base_policy, tmp_path, total_decisions=4, eval_episodes=0, sac=sac)
    t.train()
    t.close()
    # decisions 3 and 4 update: 5 critic-only steps once, then 2 x utd critic and 2 actor steps
    assert critic_steps(t) == 5 + 2 * 2 and actor_steps(t) == 2
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert ["critic/pretrain_loss_last" in r for r in rows] == [False, False, True, False]

    resumed = trainer(tiny_base_policy, tmp_path, total_decisions=6, eval_episodes=0, sac=sac)
    resumed.train()
    resumed.close()
    assert critic_steps(resumed) == 9 + 2 * 2 and actor_steps(resumed) == 4
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert not any("critic/pretrain_loss_last" in r for r in rows[4:])
