"""The loop shared by the supervised trainers (:func:`~tmrl_vla.bc.train_bc`, :func:`~tmrl_vla.csp.trainer.train_csp`).

:class:`SupervisedLoop` owns what both trainers do the same way and what is easy to get subtly
wrong: resuming from ``<out>/train_state.safetensors`` (written atomically: ``.tmp`` then ``os.replace``),
stopping on a non-finite loss only after saving that state, the progress bar, a ``metrics.jsonl``
row every ``log_every`` steps, a checkpoint every ``save_every`` steps (none at the final step, where
the trainer's own output is written instead), and removing the state file once that output exists.

Why callables rather than a base class to subclass: what differs between the trainers is small and
sits in four places, each one a plain function of the trainer's own objects: how a batch becomes a
loss (BC augments images, CSP draws a sigma and calls a DDP-wrapped model), how the loss updates the
weights (``loss.backward`` vs ``accelerator.backward``), what the state is (a whole model vs adapter
weights plus every rank's RNG), and what is written at the end. Passing those in keeps each trainer
readable top to bottom, with no hooks to look up in a parent class. The loop itself draws no random
numbers and calls the callables in the order the trainers always did, so moving a trainer onto it
changes none of its RNG draws, losses or weights.

Two layouts of the saved state. Flat (the default; the embedded default's cache stages): one
``<out>/train_state.safetensors``, removed once the trained model is written. LeRobot's (``checkpoints=True``,
the user-facing ``recipes/train_csp.py``): every checkpoint is a directory
``<out>/checkpoints/<step:06d>/`` holding ``pretrained_model/`` (written by ``export``: a model that
loads on its own) and ``training_state/train_state.safetensors``, with ``<out>/checkpoints/last`` pointing at
the newest; the final step is a checkpoint too, and resuming reads ``last``. Each checkpoint directory
is built under a ``.partial`` name and renamed when complete, so a crash never leaves a half one
that ``last`` points at.

Several processes (accelerate): every rank runs the loop. ``get_state`` is called on every rank at
each checkpoint, so it may be a collective (CSP gathers all ranks' RNG states); only the main
process writes files, and ``barrier`` (``accelerator.wait_for_everyone``) keeps ranks together
around writes.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tmrl_vla.metrics import append_metrics, keep_metrics_until
from tmrl_vla.state_io import load_state, save_state


def _nothing() -> None:
    return None


def _nothing_at(_) -> None:
    return None


CHECKPOINTS = "checkpoints"
LAST = "last"
PRETRAINED = "pretrained_model"
TRAINING_STATE = "training_state"


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float = 0.05) -> Callable[[int], float]:
    """Multiplier for ``LambdaLR``: linear warm-up, then cosine decay to ``min_ratio`` at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / max(1, total_steps - warmup_steps), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def adamw_warmup_cosine(
    params, lr: float, weight_decay: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.05
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """The trainers' optimiser: AdamW, with a linear warm-up then cosine decay to ``lr * min_lr_ratio``."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(warmup_steps, total_steps, min_lr_ratio)
    )


def optimizer_update(
    optimizer: torch.optim.Optimizer,
    scheduler,
    clip_gradients: Callable[[], object],
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
) -> Callable[[torch.Tensor], None]:
    """The loop's ``update``: zero the gradients, ``backward(loss)``, clip, step the optimiser and
    the schedule (``accelerator.backward`` and its clipping under accelerate)."""

    def update(loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        backward(loss)
        clip_gradients()
        optimizer.step()
        scheduler.step()

    return update


@dataclass
class StepOutput:
    """What one step's ``compute_loss`` returns."""

    loss: torch.Tensor  # scalar loss of this step's batch; checked for NaN/inf before the update
    metrics: Callable[[], dict[str, float]] = dict  # extra row entries; called after the update, on logged steps only


@dataclass
class LoopResult:
    losses: list[float]  # the loss of every step run by this call (steps before a resume are not included)
    seconds: float  # wall time of those steps, without the final save


@dataclass
class SupervisedLoop:
    """Resume, step, log and checkpoint one supervised training run (see the module docstring for why).

    Use: ``loop.resume()`` where loading state is valid (before ``accelerator.prepare``), then
    ``loop.run(compute_loss, update, lr=..., finalize=...)``. ``get_state`` returns the state to
    save (``None`` is fine off the main process); ``set_state`` receives the dict it returned.
    """

    name: str  # metric prefix and bar label: "bc" gives rows with "bc/loss", "bc/lr" and the bar "BC"
    out_dir: Path  # holds train_state.safetensors and metrics.jsonl
    steps: int  # total steps of the run, resumed ones included
    log_every: int  # a metrics row (and the bar's postfix) every this many steps
    save_every: int  # a checkpoint every this many steps, except at the final step
    get_state: Callable[[], dict | None]  # called on every rank at each checkpoint (may be a collective)
    set_state: Callable[[dict], None]  # restores what get_state returned (on every rank)
    is_main: bool = True  # only the main process writes files, logs and shows the bar
    barrier: Callable[[], None] = _nothing  # waits for every rank (accelerator.wait_for_everyone)
    progress: bool = True  # show a progress bar (on the main process)
    log: Callable[[str], None] = print  # where the resume message goes (main process only)
    checkpoints: bool = False  # LeRobot's checkpoint directories instead of one flat state file
    export: Callable[[Path], None] = _nothing_at  # writes a checkpoint's pretrained_model/ (checkpoints=True)
    on_row: Callable[[dict], None] = _nothing_at  # also receives every metrics row (e.g. Weights & Biases)
    step: int = field(default=0, init=False)  # steps done so far
    _resumed: bool = field(default=False, init=False, repr=False)
    _saved_step: int = field(default=-1, init=False, repr=False)  # the step of the newest state on disk

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)

    @classmethod
    def for_config(cls, name: str, out_dir: str | Path, config, state_io: tuple, **kwargs) -> SupervisedLoop:
        """A loop with ``config``'s ``steps``, ``log_every`` and ``save_every`` and ``state_io``'s
        (get_state, set_state); ``kwargs``: the other fields."""
        get_state, set_state = state_io
        cadence = dict(steps=config.steps, log_every=config.log_every, save_every=config.save_every)
        return cls(name, Path(out_dir), **cadence, get_state=get_state, set_state=set_state, **kwargs)

    @property
    def state_path(self) -> Path:
        """The state a resume reads: the flat file, or the newest checkpoint's."""
        if self.checkpoints:
            return self.out_dir / CHECKPOINTS / LAST / TRAINING_STATE / "train_state.safetensors"
        return self.out_dir / "train_state.safetensors"

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.jsonl"

    def resume(self) -> int:
        """Load the state file if there is one; drop metrics rows logged after it. Returns the step."""
        self._resumed = True
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.state_path.exists():
            state = load_state(self.state_path)
            self.set_state(state)
            self.step = self._saved_step = state["step"]
            if self.is_main:
                self.log(f"[{self.name}] resuming from step {self.step}")
        if self.is_main:  # rows past the checkpoint will be logged again
            keep_metrics_until(self.metrics_path, "step", self.step)
        return self.step

    def save(self) -> None:
        """Write the state atomically; call it on every rank (``get_state`` may be a collective)."""
        state = self.get_state()
        self._saved_step = self.step
        if self.is_main and self.checkpoints:
            self._write_checkpoint_dir({**state, "step": self.step})
        elif self.is_main:
            save_state({**state, "step": self.step}, self.state_path)
        self.barrier()

    def _write_checkpoint_dir(self, state: dict) -> None:
        """``checkpoints/<step>/{pretrained_model,training_state}``, then move ``last`` to it."""
        root = self.out_dir / CHECKPOINTS
        final = root / f"{self.step:06d}"
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        (partial / TRAINING_STATE).mkdir(parents=True)
        self.export(partial / PRETRAINED)
        save_state(state, partial / TRAINING_STATE / "train_state.safetensors")
        shutil.rmtree(final, ignore_errors=True)  # a checkpoint of the same step from a run resumed before it
        os.replace(partial, final)
        link = root / (LAST + ".tmp")
        link.unlink(missing_ok=True)
        link.symlink_to(final.name)  # relative: the output directory can be moved
        os.replace(link, root / LAST)

    def run(
        self,
        compute_loss: Callable[[], StepOutput],
        update: Callable[[torch.Tensor], None],
        *,
        lr: Callable[[], float],
        finalize: Callable[[], None] = _nothing,
    ) -> LoopResult:
        """Step until ``steps``; then, on the main process, ``finalize()`` (write the trained model)
        and remove the state file. ``compute_loss`` draws a batch and returns its loss; ``update``
        applies it (backward, clipping, optimiser and scheduler steps); ``lr`` is logged per row."""
        if not self._resumed:
            self.resume()
        losses: list[float] = []
        recent: list[float] = []  # losses since the last row
        start = time.perf_counter()
        label, disable = self.name.upper(), not (self.progress and self.is_main)
        bar = tqdm(total=self.steps, initial=self.step, desc=label, unit="step", disable=disable)
        while self.step < self.steps:
            out = compute_loss()
            if not torch.isfinite(out.loss):
                self.save()
                raise FloatingPointError(
                    f"{label} loss is {out.loss.item()} at step {self.step}; state saved to {self.state_path}"
                )
            update(out.loss)
            self.step += 1
            losses.append(out.loss.item())
            recent.append(losses[-1])
            bar.update(1)
            if self.step % self.log_every == 0:
                if self.is_main:
                    row = {"step": self.step, f"{self.name}/loss": sum(recent) / len(recent), f"{self.name}/lr": lr()}
                    row |= out.metrics()
                    append_metrics(self.metrics_path, row)
                    self.on_row(row)
                    bar.set_postfix(**_bar_losses(row, self.name))
                recent = []
            if self.step % self.save_every == 0 and self.step < self.steps:
                self.save()
        bar.close()
        seconds = time.perf_counter() - start
        if self.checkpoints and self._saved_step != self.step:
            self.save()  # the final checkpoint (a collective); a run resumed at its end has it already
        self.barrier()
        if self.is_main:
            finalize()
            if not self.checkpoints:
                self.state_path.unlink(missing_ok=True)
        self.barrier()
        return LoopResult(losses=losses, seconds=seconds)


def _bar_losses(row: dict, name: str) -> dict[str, str]:
    """The bar's postfix: the loss, and any finer losses of the row (CSP's per sigma bucket, as
    ``sigma_0.00-0.25``), each with its name's prefix dropped."""
    prefix = f"{name}/loss_"
    shown = {"loss": row[f"{name}/loss"]} | {k.removeprefix(prefix): v for k, v in row.items() if k.startswith(prefix)}
    return {k: f"{v:.4f}" for k, v in shown.items()}
