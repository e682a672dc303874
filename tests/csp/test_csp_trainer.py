import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lerobot.configs.default import DatasetConfig

from tmrl_vla.csp.config import CSPConfig
from tmrl_vla.csp.trainer import CSPTrainConfig, bucket_losses, sample_sigma, train_csp

FAST = dict(batch_size=4, warmup_steps=1, calibration_batches=1, log_every=1, num_threads=1)


def test_sigma_sampling():
    g = torch.Generator().manual_seed(0)
    s = sample_sigma(1000, CSPTrainConfig(sigma_power=1.0), g)
    assert s.shape == (1000,) and s.min() >= 0 and s.max() <= 1 and abs(s.mean() - 0.5) < 0.05
    tilted = sample_sigma(1000, CSPTrainConfig(sigma_power=2.0, clean_fraction=0.25), g)
    assert (tilted[:250] == 0).all() and tilted.mean() < 0.3
    with pytest.raises(ValueError):
        CSPTrainConfig(clean_fraction=1.0)
    with pytest.raises(ValueError, match="needs clean_fraction > 0"):
        CSPTrainConfig(distill_weight=1.0)
    with pytest.raises(ValueError, match="distill_weight must be >= 0"):
        CSPTrainConfig(distill_weight=-1.0, clean_fraction=0.5)


def test_bucket_losses():
    out = bucket_losses(torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0.1, 0.2, 1.0]))
    assert out == {"csp/loss_sigma_0.00-0.25": 2.0, "csp/loss_sigma_0.75-1.00": 5.0}


def run(tmp_path, tiny_demos, tiny_base_policy, name, steps, checkpoints=False, **kw):
    config, root, _ = tiny_demos
    return train_csp(
        CSPTrainConfig(steps=steps, **{**FAST, **kw}),
        base_policy_dir=tiny_base_policy,
        dataset=DatasetConfig(repo_id=config.repo_id, root=str(root), video_backend="pyav"),
        out_dir=tmp_path / name,
        progress=False,
        log=lambda _: None,
        checkpoints=checkpoints,
    )


def trainable(csp) -> dict:
    return {n: p.detach().clone() for n, p in csp.named_parameters() if p.requires_grad}


def test_train_writes_a_loadable_adapter_and_metrics(tmp_path, tiny_demos, tiny_base_policy):
    from tmrl_vla.csp.policy import CSPPolicy
    from tmrl_vla.policies import load_lerobot_policy

    result = run(tmp_path, tiny_demos, tiny_base_policy, "a", steps=3)
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all("csp/loss" in r for r in rows)
    assert set(result["segment_scale"]) == {"image", "language", "state"}
    base, _, _ = load_lerobot_policy(tiny_base_policy)
    loaded = CSPPolicy.from_pretrained(tmp_path / "a", base=base)
    assert loaded.config.segment_scale == result["segment_scale"]


@pytest.mark.parametrize("data_loader", ["memory", "stream"])
def test_resume_continues_with_the_same_data_order(tmp_path, tiny_demos, tiny_base_policy, monkeypatch, data_loader):
    from tmrl_vla.csp.policy import CSPPolicy

    def run_6(name):
        return run(tmp_path, tiny_demos, tiny_base_policy, name, steps=6, save_every=3, data_loader=data_loader)

    straight = run_6("straight")["csp"]
    real_forward, calls = CSPPolicy.forward, {"n": 0}

    def crash_at_step_5(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated crash")
        return real_forward(self, *a, **k)

    monkeypatch.setattr(CSPPolicy, "forward", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        run_6("crashed")
    assert (tmp_path / "crashed" / "train_state.safetensors").exists()
    monkeypatch.setattr(CSPPolicy, "forward", real_forward)
    resumed = run_6("crashed")["csp"]
    a = dict(straight.named_parameters())
    for name, p in resumed.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, a[name]), name
    rows = [(tmp_path / d / "metrics.jsonl").read_text().splitlines() for d in ("straight", "crashed")]
    assert rows[0] == rows[1]  # the row of step 4, logged before the crash, is not doubled


def test_lerobot_checkpoint_directories_load_and_resume(tmp_path, tiny_demos, tiny_base_policy, tiny_video_demos):
    from tmrl_vla.csp.policy import CSPPolicy

    straight = run(tmp_path, tiny_video_demos, tiny_base_policy, "straight", steps=4, save_every=2, checkpoints=True)
    ckpts = tmp_path / "straight" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["000002", "000004", "last"]
    assert ckpts.joinpath("last").is_symlink() and ckpts.joinpath("last").readlink().name == "000004"
    for step in ("000002", "000004"):
        assert (ckpts / step / "training_state" / "train_state.safetensors").is_file()
    final = CSPPolicy.from_pretrained(ckpts / "last" / "pretrained_model")  # loads its base on its own
    assert final.datasets == ["local/test_video_demos"]
    want = trainable(straight["csp"])
    assert all(torch.equal(p, want[n]) for n, p in trainable(final).items())
    assert not (tmp_path / "straight" / "train_state.safetensors").exists()

    # A run stopped after its step-2 checkpoint, resumed: the same adapter, no checkpoint lost.
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed", symlinks=True)
    resumed_ckpts = tmp_path / "resumed" / "checkpoints"
    shutil.rmtree(resumed_ckpts / "000004")
    (resumed_ckpts / "last").unlink()
    (resumed_ckpts / "last").symlink_to("000002")
    resumed = run(tmp_path, tiny_video_demos, tiny_base_policy, "resumed", steps=4, save_every=2, checkpoints=True)
    assert all(torch.equal(p, want[n]) for n, p in trainable(resumed["csp"]).items())
    assert (resumed_ckpts / "last").readlink().name == "000004"


def test_dataset_without_the_policy_image_keys(tmp_path, tiny_demos, tiny_base_policy):
    cfg_path = Path(tiny_base_policy) / "config.json"
    copy_dir = tmp_path / "policy"
    import shutil

    shutil.copytree(tiny_base_policy, copy_dir)
    cfg = json.loads(cfg_path.read_text())
    feats = cfg["input_features"]
    feats["observation.images.wrist"] = feats["observation.images.front"]
    (copy_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="observation.images.wrist"):
        run(tmp_path, tiny_demos, copy_dir, "x", steps=1)


def edited_copy(base, tmp_path, edit_config=None, drop_stats=None):
    """A copy of the base checkpoint with its config.json edited or some normaliser statistics removed."""
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "edited_policy"
    shutil.copytree(base, copy)
    if edit_config:
        cfg = json.loads((copy / "config.json").read_text())
        edit_config(cfg)
        (copy / "config.json").write_text(json.dumps(cfg))
    if drop_stats:
        for file in copy.glob("policy_*normalizer*.safetensors"):
            kept = {k: v for k, v in load_file(file).items() if not k.startswith(drop_stats)}
            save_file(kept, file)
    return copy


def wider(key, width):
    def edit(cfg):
        section = "output_features" if key == "action" else "input_features"
        cfg[section][key]["shape"] = [width]

    return edit


@pytest.mark.parametrize(
    "edit, match",
    [
        (dict(edit_config=wider("observation.state", 7)), r"observation.state dimension mismatch.*\(6,\).*\(7,\)"),
        (dict(edit_config=wider("action", 5)), r"action dimension mismatch.*\(6,\).*\(5,\)"),
        (dict(drop_stats="observation.state"), "no statistics for 'observation.state'"),
    ],
    ids=["state width", "action width", "missing statistics"],
)
@pytest.mark.parametrize("data_loader", ["memory", "stream"])
def test_a_dataset_that_does_not_fit_the_policy_is_refused_before_anything_is_written(
    tmp_path, tiny_demos, tiny_base_policy, edit, match, data_loader
):
    from tmrl_vla.policies import CheckpointError

    base = edited_copy(tiny_base_policy, tmp_path, **edit)
    with pytest.raises(CheckpointError, match=match):
        run(tmp_path, tiny_demos, base, "out", steps=1, data_loader=data_loader)
    assert not (tmp_path / "out").exists()


def test_two_cpu_processes_on_a_video_dataset_end_with_equal_parameters(tmp_path, tiny_video_demos, tiny_base_policy):
    """accelerate's `launch --cpu --num_processes 2` silently runs one process; torchrun runs two (gloo)."""
    config, root, _ = tiny_video_demos
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    script = Path(__file__).with_name("ddp_train.py")
    subprocess.run(
        cmd + [str(script), str(tiny_base_policy), config.repo_id, str(root), str(out), "stream"],
        check=True,
        env=env,
        timeout=180,
    )
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["num_processes"] == 2 for r in ranks)
    assert ranks[0]["hash"] == ranks[1]["hash"]
    assert (out / "adapter_model.safetensors").exists()


def test_unknown_csp_option():
    with pytest.raises(ValueError, match="noise_scale"):
        CSPConfig(noise_scale="rms")


def test_the_in_memory_path_refuses_image_transforms_rather_than_skip_them(tmp_path, tiny_demos, tiny_base_policy):
    from lerobot.transforms import ImageTransformsConfig

    config, root, _ = tiny_demos
    dataset = DatasetConfig(
        repo_id=config.repo_id,
        root=str(root),
        video_backend="pyav",
        image_transforms=ImageTransformsConfig(enable=True),
    )
    with pytest.raises(ValueError, match="image transforms need data_loader='stream'"):
        train_csp(
            CSPTrainConfig(steps=1, data_loader="memory", **FAST),
            base_policy_dir=tiny_base_policy,
            dataset=dataset,
            out_dir=tmp_path / "out",
            progress=False,
        )
    assert not (tmp_path / "out").exists()


def test_distillation_is_logged_and_holds_sigma_zero_near_the_base(tmp_path, tiny_demos, tiny_base_policy):
    """The same short run with a negligible and with a large distillation weight (same seed, so the same
    batches and draws): the term starts at 0 (an untrained adapter is the base at sigma 0) and the large
    weight keeps it lower over the run's second half."""
    distances = {}
    for weight in (1e-6, 1e2):
        options = dict(steps=20, lr=1e-2, clean_fraction=0.5, distill_weight=weight)
        run(tmp_path, tiny_demos, tiny_base_policy, f"w{weight}", **options)
        rows = [json.loads(line) for line in (tmp_path / f"w{weight}" / "metrics.jsonl").read_text().splitlines()]
        assert rows[0]["csp/distill"] < 1e-10
        distances[weight] = [r["csp/distill"] for r in rows[10:]]
    assert min(distances[1e-6]) > 0
    assert sum(distances[1e2]) < 0.5 * sum(distances[1e-6])
