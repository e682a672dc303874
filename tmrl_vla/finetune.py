"""The fine-tuning job behind ``recipes/finetune_pick.py``: config, CLI parsing and ``train(cfg)``.

Stages: build (or reuse from the cache) the embedded default's assets - demos, the BC base policy,
its evaluation, the CSP adapter - then fine-tune with TMRL (``--agent=tmrl``, the default) or the
DSRL baseline (``--agent=dsrl``), and write a report. A user's own policy, adapter and env replace
the embedded ones by configuration (``--policy.path``, ``--csp.path``, ``--env.type``).

Several processes: rank 0 builds the assets while the others wait; then every process loads the
frozen policy, owns its envs and replay shard, and trains the one shared high-level policy.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import Accelerator

from tmrl_vla.assets import AssetsConfig, build_default_assets, with_task_demos
from tmrl_vla.cache import AssetCache
from tmrl_vla.config_tools import flatten_config, parse_config
from tmrl_vla.envs.spec import EnvSpec
from tmrl_vla.hub import check_repo_id
from tmrl_vla.rl.checkpoint import refuse_existing_run
from tmrl_vla.rl.config import AgentConfig, ObservationConfig, SACConfig, TMRLConfig
from tmrl_vla.rl.run import run_rl


@dataclass(frozen=True)
class PolicySource:
    # A LeRobot checkpoint directory or Hub repo id; None: the embedded default's BC policy.
    path: str | None = None


@dataclass(frozen=True)
class CSPSource:
    # A CSP adapter directory or Hub repo id for the policy above (without --policy.path: one trained
    # on the embedded policy, e.g. by recipes/train_csp.py); None: the embedded default's, built for
    # TMRL only. Unused by DSRL.
    path: str | None = None


def default_rl() -> TMRLConfig:
    """The embedded default's RL stage: short enough that the whole recipe stays near 15 minutes
    from an empty cache on a 2-core CPU (eval/compare_tmrl_dsrl.py runs the long comparison).

    The agent settings are the ones measured to learn the pick task (README, "TMRL vs DSRL"):
    exploration noise held per episode, 3-step returns, 8 actor updates of 2 critic updates each per
    decision, a faster temperature, a 40-decision warm-up, TMRL steering z and sigma only (the
    CSP policy draws its context noise i.i.d. per token, as in its training), and image tokens
    pooled on a 2 x 2 grid: the mean image token loses where the cube is, and with it TMRL
    plateaued near 55% success; with the grid 2 of 5 TMRL runs reached 80% rolling training
    success within 1500 decisions (README, "TMRL vs DSRL").
    """
    return TMRLConfig(
        agent=AgentConfig(heads=("z", "y")),
        observation=ObservationConfig(image_grid=2),
        sac=SACConfig(
            utd=2,
            batch_size=128,
            temperature_lr=1e-3,
            updates_per_decision=8,
            warmup_decisions=40,
            n_step=3,
            exploration="episode",
        ),
        num_envs=8,
        total_decisions=200,
        eval_every=100,
        eval_episodes=16,
        save_every=50,
    )


@dataclass(frozen=True)
class HubPush:
    repo_id: str | None = None  # the agent's Hub repo (user/name) that --push_to_hub=true uploads to
    private: bool | None = None  # create the repo private; None: the Hub's default
    license: str | None = "apache-2.0"  # the license in the card's front matter (None: no license field)
    push_checkpoints: bool = False  # also push the agent at every checkpoint (--rl.save_every), not only at the end


@dataclass(frozen=True)
class FinetuneConfig:
    assets: AssetsConfig = field(default_factory=AssetsConfig)  # the embedded default's stages (demos, BC, CSP)
    policy: PolicySource = field(default_factory=PolicySource)  # the policy to fine-tune
    csp: CSPSource = field(default_factory=CSPSource)  # its CSP adapter
    # The fine-tuning task; the preset's is the pick task with the moved front camera (see
    # eval/results/csp_coverage.md for how it was chosen).
    env: EnvSpec = field(default_factory=lambda: EnvSpec(shift="moved_camera"))
    rl: TMRLConfig = field(default_factory=default_rl)  # the RL run (TMRL or DSRL)
    # Scripted-expert demonstrations of the fine-tuning task put into the agent's replay (rl.demos),
    # recorded once into the cache; so100_pick_cube only, where the expert exists (another env, or
    # 0: none). Measured: eval/results/agent_start.md#demonstrations-in-the-replay. Your own dataset
    # (--rl.demos.repo_id) replaces them.
    task_demos: int = 10
    output_dir: str = "outputs/finetune_pick"  # everything the job writes goes under it
    cache_dir: str | None = None  # the assets' build cache; None: $TMRL_VLA_CACHE or ~/.cache/tmrl_vla
    resume: bool = False  # continue the run in output_dir from its newest complete checkpoint
    skip_rl: bool = False  # stop after the assets (and their report)
    push_to_hub: bool = False  # upload the fine-tuned agent, with its card, to hub.repo_id (main process)
    hub: HubPush = field(default_factory=HubPush)  # where and how --push_to_hub uploads


ALIASES = {"--agent": "--rl.agent.kind"}


def parse_args(preset: FinetuneConfig, args: list[str] | None = None) -> FinetuneConfig:
    """The recipe's command line over ``preset`` (:func:`~tmrl_vla.config_tools.parse_config`);
    ``--agent`` is short for ``--rl.agent.kind``."""
    return parse_config(preset, args, ALIASES)


def train(cfg: FinetuneConfig) -> dict:
    """Run the job described by ``cfg``; returns a summary (also written to ``<output_dir>/summary.json``)."""
    # Accelerator (not PartialState alone) recognises CPU processes started by torchrun as MULTI_CPU.
    is_main = Accelerator().state.is_main_process
    out = Path(cfg.output_dir)
    log = print if is_main else (lambda *_: None)
    if cfg.push_to_hub:  # before minutes of training, not after
        if not cfg.hub.repo_id:
            raise ValueError("--push_to_hub=true needs --hub.repo_id=<user>/<name>")
        check_repo_id(cfg.hub.repo_id)
    if not cfg.resume and not cfg.skip_rl:
        refuse_existing_run(out / cfg.rl.agent.kind)  # before minutes of asset building, not after
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2, default=str))
    timings: dict = {}
    if cfg.policy.path is None:  # every process: the CSP stage trains on all of them
        summary = embedded_assets(cfg, out, timings, log, is_main=is_main)
        if cfg.csp.path is not None:  # an adapter retrained on the embedded policy (its loader checks the base)
            summary["csp_adapter"] = cfg.csp.path
    else:
        summary = {"base_policy": cfg.policy.path, "csp_adapter": cfg.csp.path}
    if not cfg.skip_rl:
        start = time.perf_counter()
        commands = card_commands(cfg)
        rl = task_demos(cfg, summary, log)
        summary["rl"] = run_rl(
            rl,
            policy=summary["base_policy"],
            adapter=summary["csp_adapter"],
            env=cfg.env,
            run_dir=out / cfg.rl.agent.kind,
            resume=cfg.resume,
            log=log,
            commands=commands,
            on_checkpoint=(
                checkpoint_pusher(cfg, summary, commands, log) if cfg.push_to_hub and cfg.hub.push_checkpoints else None
            ),
        )
        timings["rl_seconds"] = time.perf_counter() - start
        if cfg.push_to_hub and is_main:
            summary["rl"]["commit_url"] = push_agent(cfg, summary["rl"]["policy"], commands, log)
    summary["timings"] = timings
    if is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        log(f"report:       {out / 'summary.json'}")
    return summary if is_main else {}


def task_demos(cfg: FinetuneConfig, summary: dict, log) -> TMRLConfig:
    """The RL config the run trains: ``cfg.rl`` with the task's expert demonstrations in its replay
    (``cfg.task_demos``) unless it names a dataset of its own or the env has no expert."""
    if cfg.rl.demos.enabled or not cfg.task_demos:
        return cfg.rl
    if cfg.env.type != "so100_pick_cube":
        log(f"[demos] no scripted expert for {cfg.env.type}: none in the replay (--rl.demos.repo_id adds yours)")
        return cfg.rl
    rl = with_task_demos(cfg.rl, cfg.env, cfg.task_demos, AssetCache(cfg.cache_dir), log=log)
    summary["task_demos"] = rl.demos.root
    return rl


# Fields that say where and how a run writes, not what it trains: left out of the card's command.
_NOT_REPRODUCED = ("output_dir", "cache_dir", "resume", "push_to_hub", "hub.")


def card_commands(cfg: FinetuneConfig) -> dict[str, str]:
    """The commands a card shows: the recipe with every setting that differs from the preset (a
    local path becomes a placeholder: it means nothing on another machine), and ``lerobot-eval``."""
    preset, mine = (
        flatten_config(json.loads(json.dumps(dataclasses.asdict(c), default=list))) for c in (FinetuneConfig(), cfg)
    )
    args = []
    for key in sorted(mine):
        if key.startswith(_NOT_REPRODUCED) or mine[key] == preset.get(key):
            continue
        value = mine[key]
        if isinstance(value, str) and Path(value).exists():
            value = f"<{key.split('.')[0]} directory>"
        args.append(f"--{key}={json.dumps(value) if not isinstance(value, str) else value}")
    agent = cfg.hub.repo_id or "path/to/this/agent"
    commands = {"train": " ".join(["accelerate launch recipes/finetune_pick.py", *args])}
    if cfg.env.type == "so100_pick_cube":
        shift = f" --env.shift={cfg.env.shift}" if cfg.env.shift else ""
        commands["evaluate"] = (
            f"lerobot-eval --policy.path={agent} --env.type=so100_pick_cube{shift} --eval.n_episodes=50"
        )
    return commands


def push_agent(cfg: FinetuneConfig, policy_dir: str, commands: dict, log, *, message: str | None = None) -> str:
    """Upload the saved agent to ``cfg.hub.repo_id`` (its card rendered for that repo); returns the commit URL."""
    from tmrl_vla.rl.pretrained import TMRLAgent

    agent = TMRLAgent.from_pretrained(policy_dir)
    curve = Path(policy_dir) / "learning_curve.png"
    url = agent.push_to_hub(
        cfg.hub.repo_id,
        private=cfg.hub.private,
        curve=curve if curve.is_file() else None,
        commands=commands,
        license=cfg.hub.license,
        message=message,
    )
    log(f"pushed:       {url}")
    return url


def checkpoint_pusher(cfg: FinetuneConfig, summary: dict, commands: dict, log):
    """``on_checkpoint`` for --hub.push_checkpoints: the agent as it is at that checkpoint, to the Hub."""
    from tmrl_vla.rl.pretrained import TMRLAgent

    def push(trainer) -> None:
        agent = TMRLAgent.from_trainer(
            trainer, base_policy=summary["base_policy"], csp_adapter=summary["csp_adapter"], results=None
        )
        url = agent.push_to_hub(
            cfg.hub.repo_id,
            private=cfg.hub.private,
            commands=commands,
            license=cfg.hub.license,
            message=f"Checkpoint at decision {trainer.decision} ({trainer.episodes} episodes)",
        )
        log(f"pushed checkpoint: {url}")

    return push


def needs_embedded_adapter(cfg: FinetuneConfig) -> bool:
    """Whether the job reads the embedded CSP adapter: a TMRL run without ``--csp.path``, or an
    assets-only job (``--skip_rl``). DSRL steers the base policy itself."""
    return cfg.skip_rl or (cfg.rl.agent.kind == "tmrl" and cfg.csp.path is None)


def embedded_assets(cfg: FinetuneConfig, out: Path, timings: dict, log, *, is_main: bool) -> dict:
    """Build (or reuse) the embedded default's demos, base policy, its evaluation and, where the job
    reads it (:func:`needs_embedded_adapter`), its CSP adapter."""
    start = time.perf_counter()
    assets = build_default_assets(cfg.assets, AssetCache(cfg.cache_dir), log=log, csp=needs_embedded_adapter(cfg))
    timings["assets_seconds"] = time.perf_counter() - start
    timings["build_seconds_by_stage"] = assets.timings
    if is_main:
        plot_base_eval(assets.eval, out / "base_policy_success.png")
        report_assets(assets, out, log)
    return {
        "demos": str(assets.demos_root),
        "base_policy": str(assets.policy_dir),
        "base_policy_eval": assets.eval,
        "csp_adapter": str(assets.csp_dir) if assets.csp_dir is not None else None,
    }


def report_assets(assets, out: Path, log) -> None:
    log("")
    log(f"demos:        {assets.demos_root}")
    log(f"base policy:  {assets.policy_dir}  (SmolVLAPolicy.from_pretrained loads it)")
    for name, res in assets.eval.items():
        lo, hi = res["ci95"]
        log(f"base success  {name:<34} {res['success_rate']:.2f}  (95% CI {lo:.2f}-{hi:.2f}, n={res['episodes']})")
    if assets.csp_dir is None:
        log("CSP adapter:  not built (this run does not read it)")
    else:
        log(f"CSP adapter:  {assets.csp_dir}  (CSPPolicy.from_pretrained(dir, base=policy))")
    log(f"base report:  {out / 'base_policy_success.png'}")


def plot_base_eval(results: dict, path: Path) -> None:
    """Bar chart of the base policy's success rates with 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    rates = [results[n]["success_rate"] for n in names]
    # Error bars are distances from the rate; clip at 0 so intervals from older runs, whose bounds
    # could round to just inside the rate, still plot.
    lows = [max(0.0, r - results[n]["ci95"][0]) for n, r in zip(names, rates, strict=True)]
    highs = [max(0.0, results[n]["ci95"][1] - r) for n, r in zip(names, rates, strict=True)]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(
        range(len(names)), rates, yerr=[lows, highs], capsize=4, color=["#4c72b0", "#999999", "#dd8452"][: len(names)]
    )
    ax.set_xticks(range(len(names)), [n.replace("_", " ") for n in names], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("success rate")
    ax.set_title("Base policy (BC) success, 95% Wilson intervals")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
