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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tmrl_vla.assets import AssetsConfig, build_default_assets
from tmrl_vla.cache import AssetCache
from tmrl_vla.rl.agent import SACConfig
from tmrl_vla.rl.trainer import TMRLConfig, refuse_existing_run


@dataclass(frozen=True)
class PolicySource:
    # A LeRobot checkpoint directory or Hub repo id; None: the embedded default's BC policy.
    path: str | None = None


@dataclass(frozen=True)
class CSPSource:
    # A CSP adapter directory or Hub repo id for the policy above; None: the embedded default's
    # adapter (only with the embedded policy). Unused by DSRL.
    path: str | None = None


@dataclass(frozen=True)
class EnvSpec:
    type: str = "so100_pick_cube"
    # The context shift to fine-tune on (so100_pick_cube only); None: assets.eval.finetune_shift.
    shift: str | None = None
    episode_length: int | None = None  # control steps per episode (so100_pick_cube); None: the env's default


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
        tmrl_heads=("z", "y"),
        num_envs=8,
        total_decisions=200,
        warmup_decisions=40,
        updates_per_decision=8,
        n_step=3,
        exploration="episode",
        image_grid=2,
        eval_every=100,
        eval_episodes=16,
        save_every=50,
        sac=SACConfig(utd=2, batch_size=128, temperature_lr=1e-3),
    )


@dataclass(frozen=True)
class FinetuneConfig:
    assets: AssetsConfig = field(default_factory=AssetsConfig)
    policy: PolicySource = field(default_factory=PolicySource)
    csp: CSPSource = field(default_factory=CSPSource)
    env: EnvSpec = field(default_factory=EnvSpec)
    rl: TMRLConfig = field(default_factory=default_rl)
    output_dir: str = "outputs/finetune_pick"
    cache_dir: str | None = None  # default: $TMRL_VLA_CACHE or ~/.cache/tmrl_vla
    resume: bool = False  # continue the run in output_dir from its newest complete checkpoint
    skip_rl: bool = False  # stop after the assets (and their report)


ALIASES = {"--agent": "--rl.agent"}


def parse_args(preset: FinetuneConfig, args: list[str] | None = None) -> FinetuneConfig:
    """LeRobot-style dotted overrides (``--assets.bc.steps=500``) on top of a preset.

    draccus starts from a config file when given one, so the preset is encoded to a temporary JSON
    file; fields the command line does not name keep the preset's values. ``--agent`` is short for
    ``--rl.agent``.
    """
    import tempfile

    import draccus

    args = sys.argv[1:] if args is None else list(args)
    resolved = []
    for arg in args:
        key, sep, value = arg.partition("=")
        resolved.append(ALIASES.get(key, key) + sep + value)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "preset.json"
        path.write_text(json.dumps(draccus.encode(preset)))
        return draccus.parse(config_class=type(preset), config_path=path, args=resolved)


def train(cfg: FinetuneConfig) -> dict:
    """Run the job described by ``cfg``; returns a summary (also written to ``<output_dir>/summary.json``)."""
    from accelerate import Accelerator

    # Accelerator (not PartialState alone) recognises CPU processes started by torchrun as MULTI_CPU.
    state = Accelerator().state
    out = Path(cfg.output_dir)
    log = print if state.is_main_process else (lambda *_: None)
    timings: dict[str, float] = {}
    summary: dict = {}
    uses_default_policy = cfg.policy.path is None
    if cfg.csp.path is not None and uses_default_policy:
        raise ValueError("--csp.path names an adapter for your own policy: pass that policy with --policy.path too")
    if not cfg.resume and not cfg.skip_rl:
        refuse_existing_run(out / cfg.rl.agent)  # before minutes of asset building, not after
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2, default=str))
    if uses_default_policy:  # every process: the CSP stage trains on all of them
        start = time.perf_counter()
        assets = build_default_assets(cfg.assets, AssetCache(cfg.cache_dir), log=log)
        timings["assets_seconds"] = time.perf_counter() - start
        timings["build_seconds_by_stage"] = assets.timings
        summary |= {
            "demos": str(assets.demos_root),
            "base_policy": str(assets.policy_dir),
            "base_policy_eval": assets.eval,
            "csp_adapter": str(assets.csp_dir),
        }
        if state.is_main_process:
            plot_base_eval(assets.eval, out / "base_policy_success.png")
            report_assets(assets, out, log)
    else:
        summary |= {"base_policy": cfg.policy.path, "csp_adapter": cfg.csp.path}

    if not cfg.skip_rl:
        start = time.perf_counter()
        summary["rl"] = run_rl(cfg, summary["base_policy"], summary["csp_adapter"], out / cfg.rl.agent, log)
        timings["rl_seconds"] = time.perf_counter() - start
    summary["timings"] = timings
    if state.is_main_process:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        log(f"report:       {out / 'summary.json'}")
    return summary if state.is_main_process else {}


def report_assets(assets, out: Path, log) -> None:
    log("")
    log(f"demos:        {assets.demos_root}")
    log(f"base policy:  {assets.policy_dir}  (SmolVLAPolicy.from_pretrained loads it)")
    for name, res in assets.eval.items():
        lo, hi = res["ci95"]
        log(f"base success  {name:<34} {res['success_rate']:.2f}  (95% CI {lo:.2f}-{hi:.2f}, n={res['episodes']})")
    log(f"CSP adapter:  {assets.csp_dir}  (CSPPolicy.from_pretrained(dir, base=policy))")
    log(f"base report:  {out / 'base_policy_success.png'}")


def finetune_shift(cfg: FinetuneConfig) -> str:
    return cfg.env.shift or cfg.assets.eval.finetune_shift


def make_env_factory(cfg: FinetuneConfig):
    """A no-argument env factory for the fine-tuning task (errors for an unknown type or shift come
    from the first env it builds)."""
    from tmrl_vla.envs import make_env

    kwargs = {}
    if cfg.env.type == "so100_pick_cube":
        kwargs["shift"] = finetune_shift(cfg)
        if cfg.env.episode_length is not None:
            kwargs["episode_length"] = cfg.env.episode_length
    elif cfg.env.shift is not None or cfg.env.episode_length is not None:
        raise ValueError(f"--env.shift and --env.episode_length apply to so100_pick_cube only, not {cfg.env.type!r}")
    return lambda: make_env(cfg.env.type, **kwargs)


def run_rl(cfg: FinetuneConfig, policy_path: str, adapter_path: str | None, run_dir: Path, log) -> dict:
    """Fine-tune the frozen (CSP) policy with the high-level agent; returns the run's summary."""
    from tmrl_vla.csp.policy import CSPPolicy
    from tmrl_vla.policies import check_image_resolution, load_lerobot_policy
    from tmrl_vla.rl.curves import episodes_to_threshold, read_metrics
    from tmrl_vla.rl.trainer import TMRLTrainer

    policy, pre, post = load_lerobot_policy(policy_path)
    if cfg.rl.agent == "tmrl":
        if adapter_path is None:
            raise ValueError("TMRL needs a CSP adapter for this policy: pass --csp.path (or use --agent=dsrl)")
        csp = CSPPolicy.from_pretrained(adapter_path, base=policy)  # names both bases if they differ
    else:
        csp = CSPPolicy.from_base(policy)  # no adapter: exactly the BC policy at sigma = 0
    csp.merge_adapter()  # frozen from here on: merged LoRA costs nothing per call
    make_env = make_env_factory(cfg)
    probe = make_env()  # fails early on an unknown env type or shift, and checks the cameras
    check_image_resolution(policy.config, probe.observation_space)
    probe.close()
    task = f"{cfg.env.type} ({finetune_shift(cfg)})"
    log(
        f"\n[{cfg.rl.agent}] fine-tuning on {task}, "
        f"{cfg.rl.total_decisions} decisions x {cfg.rl.num_envs} envs per process -> {run_dir}"
    )
    trainer = TMRLTrainer(
        cfg.rl,
        csp=csp,
        preprocessor=pre,
        postprocessor=post,
        make_env=make_env,
        out_dir=run_dir,
        resume=cfg.resume,
        log=log,
    )
    try:
        result = trainer.train()
    finally:
        trainer.close()
    if not trainer.is_main:
        return result
    from tmrl_vla.rl.pretrained import TMRLAgent

    rows = read_metrics(trainer.metrics_file)
    evals = [r["eval/success_rate"] for r in rows if "eval/success_rate" in r]
    result["final_eval_success"] = evals[-1] if evals else None
    results = {**result, "env": task}
    agent = TMRLAgent.from_trainer(trainer, base_policy=policy_path, csp_adapter=adapter_path, results=results)
    saved = agent.save_pretrained(run_dir / "high_level_policy")
    result |= {
        "episodes_to_80": episodes_to_threshold(rows, 0.8, min_episodes=cfg.rl.success_window),
        "metrics": str(trainer.metrics_file),
        "learning_curve": str(run_dir / "learning_curve.png"),
        "high_level_policy": str(saved),
    }
    log(
        f"[{cfg.rl.agent}] {result['episodes']} episodes, {result['successes']} successes; "
        f"final evaluation success {result['final_eval_success']}"
    )
    log(f"metrics:      {result['metrics']}")
    log(f"curve:        {result['learning_curve']}")
    log(f"checkpoints:  {run_dir / 'checkpoints'} (resume with --resume)")
    log(f"high-level:   {saved}  (TMRLAgent.from_pretrained loads it)")
    return result


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
