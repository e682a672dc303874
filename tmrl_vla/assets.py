"""The embedded default's assets, built on first use through the :class:`~tmrl_vla.cache.AssetCache`.

Stages and what each one's cache key covers:

* ``demos``: the demo config and the scene file (editing the MJCF invalidates recorded demos);
* ``base_policy``: the BC config and the demos' hash;
* ``base_eval``: the evaluation config and the base policy's hash;
* ``csp_adapter``: the CSP training config, the base policy's and the demos' hashes.

Each stage is skipped when a valid build exists, and a crashed BC run resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from lerobot.configs.default import DatasetConfig

from tmrl_vla.bc import BCConfig, train_bc
from tmrl_vla.cache import AssetCache
from tmrl_vla.csp.trainer import CSPTrainConfig, train_csp
from tmrl_vla.data.demos import DemoConfig, record_demos
from tmrl_vla.envs.pick_cube import PickCubeConfig, PickCubeEnv
from tmrl_vla.envs.spec import EnvSpec
from tmrl_vla.policies import check_image_resolution, load_lerobot_policy
from tmrl_vla.rl.config import TMRLConfig
from tmrl_vla.rl.distributed import barrier, rank
from tmrl_vla.rollout import LeRobotChunkPolicy, evaluate


@dataclass(frozen=True)
class EvalConfig:
    episodes: int = 50  # episodes per evaluated task (in distribution, images swapped, the fine-tuning shift)
    num_envs: int = 10  # envs stepped together
    seed: int = 100_000  # episode i uses env seed seed + i: disjoint from the demos' seeds 0 .. num_episodes - 1
    finetune_shift: str = "moved_camera"  # the default fine-tuning task (see README: how it was chosen)


@dataclass(frozen=True)
class AssetsConfig:
    demos: DemoConfig = field(default_factory=DemoConfig)  # the scripted expert's demos (stage "demos")
    bc: BCConfig = field(default_factory=BCConfig)  # the base policy, BC-trained on the demos (stage "base_policy")
    eval: EvalConfig = field(default_factory=EvalConfig)  # the base policy's success rates (stage "base_eval")
    # Its CSP adapter (stage "csp_adapter"). The demos are small PNG datasets, decoded once into memory.
    csp: CSPTrainConfig = field(default_factory=lambda: CSPTrainConfig(data_loader="memory"))


@dataclass(frozen=True)
class Assets:
    demos_root: Path
    demos_repo_id: str
    policy_dir: Path
    eval: dict
    csp_dir: Path | None  # None when it was not asked for (``build_default_assets(..., csp=False)``)
    timings: dict


def scene_hash() -> str:
    xml = (resources.files("tmrl_vla.envs") / "assets" / "so100_pick_cube.xml").read_bytes()
    return hashlib.sha256(xml).hexdigest()[:16]


def build_demos(cache: AssetCache, config: DemoConfig, *, log=print):
    key = {"demos": dataclasses.asdict(config), "scene": scene_hash()}

    def build(work: Path) -> dict:
        dataset = work / "dataset"
        if dataset.exists():  # a crashed attempt: LeRobot cannot append to a half-written dataset
            shutil.rmtree(dataset)
        stats = record_demos(config, dataset)
        log(f"[demos] {stats.episodes_saved}/{stats.episodes_tried} expert episodes succeeded ({stats.frames} frames)")
        return {"expert_success_rate": stats.expert_success_rate, "frames": stats.frames}

    return cache.get_or_build("demos", key, build, log=log)


# Episode seeds of the task demonstrations (task_demos) start here: apart from every training seed
# ((seed * 64 + rank) * 1e6 + k) and from the evaluations' (4e9 + k).
TASK_DEMO_SEED = 2_000_000_000


def task_demo_config(env: EnvSpec, episodes: int) -> DemoConfig:
    """Scripted-expert demonstrations of the pick task that ``env`` describes (its shift, its options),
    for the agent's replay: the task being fine-tuned, not the one the base policy was trained on."""
    if env.type != "so100_pick_cube":
        raise ValueError(f"the scripted expert demonstrates the so100_pick_cube env only, not {env.type!r}")
    shift = env.shift or "none"
    options = {k: v for k, v in env.kwargs().items() if k != "shift"}
    return DemoConfig(
        num_episodes=episodes,
        seed=TASK_DEMO_SEED,
        env=PickCubeConfig.with_shift(shift, **options),
        repo_id=f"local/{shift}_demos",
    )


def with_task_demos(rl: TMRLConfig, env: EnvSpec, episodes: int, cache: AssetCache, *, log=print) -> TMRLConfig:
    """``rl`` with ``episodes`` expert demonstrations of ``env``'s pick task in its replay (``rl.demos``),
    recorded into ``cache`` the first time (by process 0, while the others wait; then they read it)."""
    config = task_demo_config(env, episodes)
    if rank() == 0:
        stage = build_demos(cache, config, log=log)
    barrier()
    if rank() != 0:  # cached now: this only reads
        stage = build_demos(cache, config, log=lambda *_: None)
    return dataclasses.replace(
        rl, demos=dataclasses.replace(rl.demos, repo_id=config.repo_id, root=str(stage.path / "dataset"))
    )


def demo_dataset(config: DemoConfig, demos) -> DatasetConfig:
    """The recorded demos as LeRobot's dataset config (what the trainers take)."""
    return DatasetConfig(repo_id=config.repo_id, root=str(demos.path / "dataset"))


def build_base_policy(cache: AssetCache, config: BCConfig, demos, demo_config: DemoConfig, *, log=print):
    key = {"bc": dataclasses.asdict(config), "demos": demos.hash}

    def build(work: Path) -> dict:
        return train_bc(config, dataset=demo_dataset(demo_config, demos), out_dir=work, log=log)

    return cache.get_or_build("base_policy", key, build, log=log)


def evaluate_base_policy(cache: AssetCache, config: EvalConfig, policy_stage, env_config: PickCubeConfig, *, log=print):
    """Success in distribution, on the fine-tuning shift, and with images swapped between episodes."""
    key = {"eval": dataclasses.asdict(config), "policy": policy_stage.hash, "env": dataclasses.asdict(env_config)}

    def build(work: Path) -> dict:

        chunk_policy = LeRobotChunkPolicy(*load_lerobot_policy(policy_stage.path))
        probe = PickCubeEnv(env_config)
        check_image_resolution(chunk_policy.policy.config, probe.observation_space)
        probe.close()
        shifted = dataclasses.replace(env_config, shift=PickCubeConfig.with_shift(config.finetune_shift).shift)
        runs = {
            "in_distribution": dict(env=env_config, swap_images=False),
            "in_distribution_swapped_images": dict(env=env_config, swap_images=True),
            f"finetune_{config.finetune_shift}": dict(env=shifted, swap_images=False),
        }
        results = {}
        for name, run in runs.items():
            res = evaluate(
                chunk_policy,
                lambda cfg=run["env"]: PickCubeEnv(cfg),
                num_episodes=config.episodes,
                num_envs=config.num_envs,
                seed=config.seed,
                n_exec=chunk_policy.n_action_steps,
                swap_images=run["swap_images"],
                progress=True,
            )
            results[name] = res.summary()
            lo, hi = res.ci95
            log(f"[eval] {name}: success {res.success_rate:.2f} (95% CI {lo:.2f}-{hi:.2f}, n={res.n})")
        (work / "eval.json").write_text(json.dumps(results, indent=2))
        return {"results": results}

    return cache.get_or_build("base_eval", key, build, log=log)


def build_csp_adapter(
    cache: AssetCache, config: CSPTrainConfig, policy_stage, demos, demo_config, *, log=print, is_main: bool = True
):
    csp_key = dataclasses.asdict(config)
    if config.distill_weight == 0:  # added later: off, it leaves the key (and the caches built before it) as they were
        del csp_key["distill_weight"]
    key = {"csp": csp_key, "policy": policy_stage.hash, "demos": demos.hash}

    def build(work: Path) -> dict:
        metrics = train_csp(
            config,
            base_policy_dir=policy_stage.path,
            dataset=demo_dataset(demo_config, demos),
            out_dir=work,
            log=log,
        )
        metrics.pop("csp")
        return metrics

    return cache.get_or_build("csp_adapter", key, build, log=log, is_main=is_main)


def build_default_assets(config: AssetsConfig, cache: AssetCache, *, log=print, csp: bool = True) -> Assets:
    """Every stage, built where missing. Under several processes (accelerate, torchrun) call it on
    all of them: process 0 records the demos, trains and evaluates the base policy while the others
    wait, then all of them train the CSP adapter together (``train_csp`` is an accelerate trainer).

    ``csp=False`` stops before the CSP stage, the longest one on an empty cache, for the runs that do
    not read it: DSRL steers the base policy itself, and ``--csp.path`` brings an adapter of its own."""
    main = rank() == 0
    quiet = log if main else (lambda *_: None)

    def single_process_stages():
        demos = build_demos(cache, config.demos, log=quiet)
        policy = build_base_policy(cache, config.bc, demos, config.demos, log=quiet)
        evaluation = evaluate_base_policy(cache, config.eval, policy, config.demos.env, log=quiet)
        return demos, policy, evaluation

    if main:
        demos, policy, evaluation = single_process_stages()
    barrier()
    if not main:  # cached now: these only read
        demos, policy, evaluation = single_process_stages()
    stages = [demos, policy, evaluation]
    adapter = None
    if csp:
        adapter = build_csp_adapter(cache, config.csp, policy, demos, config.demos, log=quiet, is_main=main)
        barrier()
        if not main:
            adapter = build_csp_adapter(cache, config.csp, policy, demos, config.demos, log=quiet)
        stages.append(adapter)
    return Assets(
        demos_root=demos.path / "dataset",
        demos_repo_id=config.demos.repo_id,
        policy_dir=policy.path,
        eval=evaluation.manifest.get("results", {}),
        csp_dir=adapter.path if adapter is not None else None,
        timings={s.manifest["stage"]: s.seconds for s in stages},
    )


def default_policy_and_adapter(cache_dir: str | Path | None = None, *, log=print) -> tuple[str, str]:
    """The embedded default's BC policy and CSP adapter directories (built into the cache where missing)."""
    assets = build_default_assets(AssetsConfig(), AssetCache(cache_dir), log=log)
    return str(assets.policy_dir), str(assets.csp_dir)
