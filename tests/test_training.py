"""The shared supervised loop, on a toy problem: fit w in y = 3 x with SGD on random batches."""

import json

import pytest
import torch

import tmrl_vla.training as training
from tmrl_vla.state_io import load_state
from tmrl_vla.training import StepOutput, SupervisedLoop, adamw_warmup_cosine


class Toy:
    """One toy run: its weight, optimiser, batch sampler, and the callables the loop takes."""

    def __init__(self, nan_at_call: int | None = None, crash_at_call: int | None = None) -> None:
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.optimizer = torch.optim.SGD([self.w], lr=0.1)
        self.generator = torch.Generator().manual_seed(0)
        self.calls = 0
        self.nan_at_call, self.crash_at_call = nan_at_call, crash_at_call
        self.updates = 0
        self.saved_at: list[int] = []
        self.finalized = 0

    def compute_loss(self) -> StepOutput:
        self.calls += 1
        if self.calls == self.crash_at_call:
            raise KeyboardInterrupt("simulated crash")
        x = torch.randn(4, generator=self.generator)
        loss = ((self.w * x - 3 * x) ** 2).mean()
        if self.calls == self.nan_at_call:
            loss = loss * float("nan")
        return StepOutput(loss, lambda: {"toy/w": self.w.item()})

    def update(self, loss: torch.Tensor) -> None:
        self.updates += 1
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def get_state(self) -> dict:
        self.saved_at.append(self.calls)
        return {"w": self.w.detach().clone(), "generator": self.generator.get_state()}

    def set_state(self, state: dict) -> None:
        self.w.data.copy_(state["w"])
        self.generator.set_state(state["generator"])

    def finalize(self) -> None:
        self.finalized += 1

    def loop(self, out_dir, steps=10, log_every=2, save_every=4, **kw) -> SupervisedLoop:
        return SupervisedLoop(
            "toy", out_dir, steps, log_every, save_every, self.get_state, self.set_state, progress=False, **kw
        )

    def run(self, loop: SupervisedLoop):
        return loop.run(self.compute_loss, self.update, lr=lambda: 0.1, finalize=self.finalize)


def rows(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def test_metrics_rows_checkpoints_and_the_state_file_removed_at_the_end(tmp_path):
    toy = Toy()
    result = toy.run(toy.loop(tmp_path, steps=10, log_every=2, save_every=4, log=lambda _: None))
    assert len(result.losses) == 10 and 0 < result.seconds < 60
    got = rows(tmp_path)
    assert [r["step"] for r in got] == [2, 4, 6, 8, 10]
    assert set(got[0]) == {"step", "toy/loss", "toy/lr", "toy/w"}
    assert got[1]["toy/loss"] == pytest.approx(sum(result.losses[2:4]) / 2)  # mean since the previous row
    assert toy.saved_at == [4, 8]  # every save_every steps, not at the final step
    assert toy.finalized == 1
    assert not (tmp_path / "train_state.safetensors").exists()


def test_resume_continues_the_same_sequence(tmp_path):
    straight = Toy()
    straight_losses = straight.run(straight.loop(tmp_path / "straight")).losses

    crashed = Toy(crash_at_call=7)  # after the step-4 checkpoint, and after the step-6 row
    with pytest.raises(KeyboardInterrupt):
        crashed.run(crashed.loop(tmp_path / "crashed"))
    state = load_state(tmp_path / "crashed" / "train_state.safetensors")
    assert state["step"] == 4
    assert [r["step"] for r in rows(tmp_path / "crashed")] == [2, 4, 6]

    logs: list[str] = []
    again = Toy()  # a fresh process: new objects, state from the file
    loop = again.loop(tmp_path / "crashed", log=logs.append)
    assert loop.resume() == 4 and logs == ["[toy] resuming from step 4"]
    resumed_losses = again.run(loop).losses
    assert resumed_losses == straight_losses[4:]
    assert torch.equal(again.w, straight.w)
    assert rows(tmp_path / "crashed") == rows(tmp_path / "straight")  # the step-6 row is not doubled


def test_a_fresh_start_drops_rows_of_an_attempt_without_checkpoint(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 2, "toy/loss": 9.0}) + "\n")
    toy = Toy()
    toy.run(toy.loop(tmp_path, steps=2, log_every=1))
    assert [r["step"] for r in rows(tmp_path)] == [1, 2]


def test_a_non_finite_loss_saves_state_then_raises(tmp_path):
    toy = Toy(nan_at_call=3)
    message = r"TOY loss is nan at step 2; state saved to .*train_state\.safetensors"
    with pytest.raises(FloatingPointError, match=message):
        toy.run(toy.loop(tmp_path))
    assert toy.updates == 2  # the NaN loss was not applied
    state = load_state(tmp_path / "train_state.safetensors")
    assert state["step"] == 2
    assert toy.finalized == 0


class FakeBar:
    made: list[dict] = []

    def __init__(self, **kwargs) -> None:
        FakeBar.made.append(kwargs)
        self.postfix: dict = {}

    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kwargs) -> None:
        self.postfix = kwargs

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("is_main", "progress", "disabled"), [(True, True, False), (True, False, True), (False, True, True)]
)
def test_the_bar_is_shown_only_on_the_main_process_with_progress(tmp_path, monkeypatch, is_main, progress, disabled):
    monkeypatch.setattr(training, "tqdm", FakeBar)
    FakeBar.made = []
    toy = Toy()
    loop = SupervisedLoop("toy", tmp_path, 3, 1, 2, toy.get_state, toy.set_state, is_main=is_main, progress=progress)
    toy.run(loop)
    assert FakeBar.made == [dict(total=3, initial=0, desc="TOY", unit="step", disable=disabled)]


def test_off_the_main_process_state_is_gathered_but_nothing_is_written(tmp_path):
    """``get_state`` (a collective under accelerate) runs on every rank; only the main one writes."""
    toy, waits = Toy(), []
    loop = toy.loop(tmp_path, steps=5, log_every=1, save_every=2, is_main=False, barrier=lambda: waits.append(1))
    toy.run(loop)
    assert toy.saved_at == [2, 4]
    assert len(waits) == 4  # after each of the two saves, and around the final write
    assert toy.finalized == 0
    assert list(tmp_path.iterdir()) == []


def test_adamw_warmup_cosine():
    w = torch.nn.Parameter(torch.zeros(1))
    optimizer, scheduler = adamw_warmup_cosine([w], 1.0, 0.0, warmup_steps=2, total_steps=6, min_lr_ratio=0.1)
    lrs = []
    for _ in range(6):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[:3] == [0.5, 1.0, 1.0] and lrs[-1] > 0.1
    assert scheduler.get_last_lr()[0] == pytest.approx(0.1)


def test_lerobot_checkpoint_directories_export_resume_and_keep_the_final_state(tmp_path):
    exported = []

    def export(directory):
        directory.mkdir(parents=True)
        (directory / "model.txt").write_text("weights")
        exported.append(directory.parent.name)

    straight = Toy()
    want = straight.run(straight.loop(tmp_path / "straight", steps=10, save_every=4)).losses
    toy = Toy(crash_at_call=7)
    with pytest.raises(KeyboardInterrupt):
        toy.run(toy.loop(tmp_path, steps=10, save_every=4, checkpoints=True, export=export, log=lambda _: None))
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["000004", "last"] and exported == ["000004.partial"]
    resumed = Toy()
    got = resumed.run(
        resumed.loop(tmp_path, steps=10, save_every=4, checkpoints=True, export=export, log=lambda _: None)
    )
    assert got.losses == want[4:]  # the same batches from step 5 on
    assert sorted(p.name for p in root.iterdir()) == ["000004", "000008", "000010", "last"]
    assert (root / "last").readlink().name == "000010"
    assert (root / "last" / "pretrained_model" / "model.txt").read_text() == "weights"
    # kept: LeRobot keeps the final state
    assert (root / "last" / "training_state" / "train_state.safetensors").exists()
    assert resumed.finalized == 1 and not list(root.glob("*.partial"))
