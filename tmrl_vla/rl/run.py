"""One RL fine-tuning run, the library's public entry point: a LeRobot policy (and its CSP adapter),
an env spec and a config in; a trained agent, its metrics, curve and checkpoints out.

    from tmrl_vla.rl.run import run_rl
    run_rl(TMRLConfig(), policy="path/or/repo", adapter="path/or/repo", env=EnvSpec(shift="moved_camera"),
           run_dir="outputs/mine/tmrl")

The recipe (``recipes/finetune_pick.py``) and the evaluation scripts (``eval/``) all run RL through
:func:`run_rl`, so they train exactly what a user's own call trains.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from tmrl_vla.csp.policy import CSPPolicy
from tmrl_vla.envs.spec import EnvSpec
from tmrl_vla.metrics import append_metrics, read_metrics
from tmrl_vla.policies import check_image_resolution, load_lerobot_policy
from tmrl_vla.rl.config import TMRLConfig
from tmrl_vla.rl.curves import episodes_to_threshold
from tmrl_vla.rl.pretrained import TMRLAgent
from tmrl_vla.rl.trainer import TMRLTrainer

AGENT_DIR = "pretrained_model"  # the agent as a LeRobot policy (lerobot-eval --policy.path=...)


def load_frozen_policy(policy: str, adapter: str | None = None, *, device: str = "cpu"):
    """(csp, preprocessor, postprocessor): the frozen policy an agent steers.

    With an ``adapter`` (TMRL), the CSP adapter loaded onto the policy (refused if it was trained on
    another base) and merged; without (DSRL), the plain policy wrapped without one, which at sigma = 0
    is exactly the policy. Merged LoRA costs nothing per call (``eval/bench_overhead.py``).
    """
    base, pre, post = load_lerobot_policy(policy, device=device)
    csp = CSPPolicy.from_pretrained(adapter, base=base) if adapter is not None else CSPPolicy.from_base(base)
    return csp.merge_adapter(), pre, post


def frozen_policy_for(config: TMRLConfig, policy: str, adapter: str | None):
    """The frozen policy ``config``'s agent steers: with the CSP adapter for TMRL (required), the
    plain policy for DSRL (``adapter`` ignored)."""
    if config.agent.kind == "tmrl" and adapter is None:
        raise ValueError("TMRL needs a CSP adapter for this policy: pass --csp.path (or use --agent=dsrl)")
    return load_frozen_policy(policy, adapter if config.agent.kind == "tmrl" else None)


def run_rl(
    config: TMRLConfig,
    *,
    policy: str,
    adapter: str | None,
    env: EnvSpec,
    run_dir: str | Path,
    resume: bool = False,
    log: Callable[[str], None] = print,
    commands: dict[str, str] | None = None,
    on_checkpoint: Callable | None = None,
) -> dict:
    """Fine-tune the frozen (CSP) ``policy`` with the high-level agent of ``config`` on ``env``.

    TMRL needs the policy's CSP ``adapter``; DSRL takes the plain policy (``adapter`` is ignored).
    ``on_checkpoint(trainer)``: called on the main process after each checkpoint.
    ``commands``: the commands that reproduce and evaluate the run, for the agent's card.
    ``resume``: continue the run in ``run_dir`` from its newest complete checkpoint; without it, a
    ``run_dir`` that already holds a run is refused. Returns the run's summary (rank 0; the other
    processes get the trainer's counts).
    """
    csp, pre, post = frozen_policy_for(config, policy, adapter)
    make_env = env.factory()
    probe = make_env()  # fails early on an unknown option or shift, and checks the cameras
    check_image_resolution(csp.base_policy.config, probe.observation_space)
    probe.close()
    log(
        f"\n[{config.agent.kind}] fine-tuning on {env.label()}, "
        f"{config.total_decisions} decisions x {config.num_envs} envs per process -> {run_dir}"
    )
    trainer = TMRLTrainer(
        config,
        csp=csp,
        preprocessor=pre,
        postprocessor=post,
        make_env=make_env,
        out_dir=run_dir,
        resume=resume,
        log=log,
        on_checkpoint=on_checkpoint,
    )
    try:
        result = trainer.train()
    finally:
        trainer.close()
    if not trainer.is_main:
        return result
    # LeRobot's CLIs know the pick task through its env plugin; other envs are theirs to name
    env_flag = f"--env.type={env.type}" + (f" --env.shift={env.shift}" if env.shift else "")
    hint = "lerobot-eval --policy.path={saved} " + env_flag if env.type == "so100_pick_cube" else "a LeRobot policy"
    return _finish(
        trainer, result, policy=policy, adapter=adapter, label=env.label(), hint=hint, log=log, commands=commands
    )


def run_rl_on_robot(
    config: TMRLConfig,
    *,
    policy: str,
    adapter: str | None,
    make_robot_env: Callable,
    run_dir: str | Path,
    label: str,
    resume: bool = False,
    log: Callable[[str], None] = print,
    commands: dict[str, str] | None = None,
) -> dict:
    """:func:`run_rl` on one robot: ``make_robot_env(policy_config)`` builds the
    :class:`~tmrl_vla.robots.env.RobotEnv` once the policy is loaded (its features are checked
    against the robot's). A robot is one env in one process, with no evaluation episodes (each costs
    a person's time; the rolling training success is the measure), a checkpoint whenever an episode
    ends (a crash loses at most the episode in flight) and an early, checkpointed stop when the
    person asks for one. The arm is left torque-safe however the run ends (the env's ``close``).
    """
    if config.num_envs != 1 or config.eval_episodes != 0:
        raise ValueError(
            "a robot is one env with no separate evaluation episodes: set --rl.num_envs=1 --rl.eval_episodes=0 "
            f"(got {config.num_envs} and {config.eval_episodes})"
        )
    csp, pre, post = frozen_policy_for(config, policy, adapter)
    env = make_robot_env(csp.base_policy.config)
    episodes_file = Path(run_dir) / "episodes.jsonl"
    earlier = env.on_episode

    def log_episode(record) -> None:
        append_metrics(episodes_file, dataclasses.asdict(record))
        if earlier is not None:
            earlier(record)

    env.on_episode = log_episode
    made: list = []

    def make_env():
        if made:
            raise RuntimeError("a robot env is made once (evaluation needs --rl.eval_episodes=0)")
        made.append(env)
        return env

    try:
        check_image_resolution(csp.base_policy.config, env.observation_space)
        log(f"\n[{config.agent.kind}] fine-tuning on {label}, up to {config.total_decisions} decisions -> {run_dir}")
        trainer = TMRLTrainer(
            config,
            csp=csp,
            preprocessor=pre,
            postprocessor=post,
            make_env=make_env,
            out_dir=run_dir,
            resume=resume,
            log=log,
            save_at_episode_end=True,
            should_stop=lambda: env.stop_requested and env.at_episode_start,  # quit ends the episode first
            updates_at_episode_end=True,
        )
        env.continue_from(trainer.episodes)  # a resumed run numbers its episodes on
        result = trainer.train()
    finally:
        env.close()
    units = env.config
    robot_units = {"scale": list(units.joint_scale), "offset": list(units.joint_offset)} if units.joint_scale else None
    return _finish(
        trainer,
        result,
        policy=policy,
        adapter=adapter,
        label=label,
        hint="a LeRobot policy; on this robot: lerobot-rollout --strategy.type=base --policy.path={saved} ...",
        log=log,
        commands=commands,
        robot_units=robot_units,
    )


def _finish(
    trainer: TMRLTrainer,
    result: dict,
    *,
    policy: str,
    adapter: str | None,
    label: str,
    hint: str,
    log,
    commands=None,
    robot_units: dict | None = None,
) -> dict:
    """Save the agent as a LeRobot policy with its card, and summarise the run. ``label`` names the
    env; ``hint`` says how to run the saved policy (``{saved}`` becomes its directory)."""
    cfg = trainer.config
    rows = read_metrics(trainer.metrics_file)
    evals = [r["eval/success_rate"] for r in rows if "eval/success_rate" in r]
    result["final_eval_success"] = evals[-1] if evals else None
    result["episodes_to_80"] = episodes_to_threshold(rows, 0.8, min_episodes=cfg.success_window)
    results = {**result, "env": label}
    agent = TMRLAgent.from_trainer(
        trainer, base_policy=policy, csp_adapter=adapter, results=results, robot_units=robot_units
    )
    curve = trainer.out_dir / "learning_curve.png"
    saved = agent.save_pretrained(trainer.out_dir / AGENT_DIR, curve=curve, commands=commands)
    result |= {"metrics": str(trainer.metrics_file), "learning_curve": str(curve), "policy": str(saved)}
    log(
        f"[{cfg.agent.kind}] {result['episodes']} episodes, {result['successes']} successes; "
        f"final evaluation success {result['final_eval_success']}"
    )
    log(f"metrics:      {result['metrics']}")
    log(f"curve:        {result['learning_curve']}")
    log(f"checkpoints:  {trainer.out_dir / 'checkpoints'} (resume with --resume)")
    log(f"policy:       {saved}  ({hint.format(saved=saved)})")
    return result
