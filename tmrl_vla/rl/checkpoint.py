"""TMRL checkpoints: what a resumed run needs to continue as if it had never stopped, written so a
crash never leaves one that looks complete.

A checkpoint is ``<run>/checkpoints/<decision>/``: one ``rank<i>.safetensors`` per process (actor, critics and
target critics with their frozen observation statistics, optimisers, that rank's replay shard and
success buffer, the rows still waiting for their n-step return, collector seed counters, episode
counts and RNG states), the resolved ``config.json``, and a ``complete`` marker that rank 0 writes
last, once every rank has renamed its file into place. Only marked checkpoints count; the two
newest are kept. A resume refuses another config (naming the fields that differ; fields added to
the library since count at their defaults, which keep the old behaviour) or another number of
processes (each owns a replay shard). A resumed run starts fresh episodes, so the rows still waiting
for their n-step return enter the replay bootstrapped from the last observation reached.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tmrl_vla.config_tools import config_differences
from tmrl_vla.metrics import keep_metrics_until
from tmrl_vla.rl.config import TMRLConfig
from tmrl_vla.rl.distributed import barrier
from tmrl_vla.state_io import load_state, save_state

if TYPE_CHECKING:
    from tmrl_vla.rl.trainer import TMRLTrainer

KEEP = 2  # complete checkpoints kept per run


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """A run's checkpoint directories whose ``complete`` marker exists, oldest first."""
    checkpoints = Path(run_dir) / "checkpoints"
    if not checkpoints.is_dir():
        return []
    return sorted(p for p in checkpoints.iterdir() if p.name.isdigit() and (p / "complete").exists())


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint directory of a run, or None."""
    done = complete_checkpoints(run_dir)
    return done[-1] if done else None


def refuse_existing_run(run_dir: str | Path) -> None:
    """Raise rather than silently mix a new run into an old one's checkpoints and metrics."""
    if latest_checkpoint(run_dir) is not None:
        raise FileExistsError(
            f"{run_dir} already holds a TMRL run; resume it (--resume) or choose another output directory"
        )


def capture(trainer: TMRLTrainer) -> dict:
    """Everything of this rank a resumed run needs."""
    a, c = trainer.agent, trainer.collector
    return {
        "config": asdict(trainer.config),
        "world_size": trainer.world,
        "decision": trainer.decision,
        "episodes": trainer.episodes,
        "successes": trainer.successes,
        "recent": list(trainer.recent),
        "agent": a.state_dict(),
        "optimizers": {
            "actor": a.actor_opt.state_dict(),
            "critic": a.critic_opt.state_dict(),
            "temperature": a.temperature_opt.state_dict(),
        },
        "replay": trainer.replay.state_dict(),
        "success_replay": trainer.success_replay.state_dict() if trainer.success_replay is not None else None,
        "nstep": trainer.nstep.state_dict(),
        "collector": {
            "next_seed": c.next_seed,
            "episodes_finished": c.episodes_finished,
            "successes": c.successes,
            "generator": c.generator.get_state(),
        },
        "generator": trainer.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }


def restore(trainer: TMRLTrainer, state: dict) -> None:
    """Put a captured state back (the inverse of :func:`capture`)."""
    a, c = trainer.agent, trainer.collector
    a.load_state_dict(state["agent"])
    a.actor_opt.load_state_dict(state["optimizers"]["actor"])
    a.critic_opt.load_state_dict(state["optimizers"]["critic"])
    a.temperature_opt.load_state_dict(state["optimizers"]["temperature"])
    trainer.replay.load_state_dict(state["replay"])
    if trainer.success_replay is not None:
        trainer.success_replay.load_state_dict(state["success_replay"])
    # The run goes on with fresh episodes, so the interrupted ones end here: their rows still
    # waiting for n-step returns enter the replay bootstrapped from the last observation reached
    # (none wait with n_step = 1), and none of them can reach the success buffer any more.
    trainer.nstep.load_state_dict(state["nstep"])
    rows = trainer.nstep.flush()
    if rows is not None:
        trainer.replay.add_rows(rows)
    c.next_seed = state["collector"]["next_seed"]
    c.episodes_finished = state["collector"]["episodes_finished"]
    c.successes = state["collector"]["successes"]
    c.generator.set_state(state["collector"]["generator"])
    trainer.generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    trainer.decision, trainer.episodes, trainer.successes = state["decision"], state["episodes"], state["successes"]
    trainer.recent.clear()
    trainer.recent.extend(state["recent"])


def save(trainer: TMRLTrainer, tag: str | None = None) -> Path:
    """Write this rank's file, then (rank 0, once every rank has) the marker; returns the directory.

    A ``tag`` (e.g. "nonfinite", before a NaN stop) writes a diagnostic snapshot by whoever gets
    there, with no marker and no waiting: a resume never picks it up."""
    name = f"{trainer.decision:08d}" if tag is None else f"{tag}-{trainer.decision:08d}"
    directory = trainer.out_dir / "checkpoints" / name
    directory.mkdir(parents=True, exist_ok=True)
    save_state(capture(trainer), directory / f"rank{trainer.rank}.safetensors")
    config_json = json.dumps(asdict(trainer.config), indent=2)
    if tag is not None:
        (directory / "config.json").write_text(config_json)
        return directory
    barrier()
    if trainer.is_main:
        (directory / "config.json").write_text(config_json)
        marker = {"decision": trainer.decision, "world_size": trainer.world}
        (directory / "complete").write_text(json.dumps(marker))
        for old in complete_checkpoints(trainer.out_dir)[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return directory


def load(trainer: TMRLTrainer, directory: Path) -> None:
    """Resume ``trainer`` from ``directory`` after checking the process count and the config, and
    drop the metrics rows logged after it."""
    marker = json.loads((directory / "complete").read_text())
    if marker["world_size"] != trainer.world:
        raise ValueError(
            f"{directory} was written by {marker['world_size']} process(es) and this run has {trainer.world}: "
            "each process owns a replay shard, so resume with the same number of processes"
        )
    state = load_state(directory / f"rank{trainer.rank}.safetensors")
    differ = config_differences(state["config"], asdict(trainer.config), defaults=asdict(TMRLConfig()))
    if differ:
        raise ValueError(f"{directory} was written by another config; fields that differ: " + ", ".join(differ))
    restore(trainer, state)
    if trainer.is_main:
        keep_metrics_until(trainer.out_dir / "metrics.jsonl", "decision", trainer.decision)
