import json
import os
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


def test_bucket_losses():
    out = bucket_losses(torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0.1, 0.2, 1.0]))
    assert out == {"csp/loss_sigma_0.00-0.25": 2.0, "csp/loss_sigma_0.75-1.00": 5.0}


def run(tmp_path, tiny_demos, tiny_base_policy, name, steps, **kw):
    config, root, _ = tiny_demos
    return train_csp(
        CSPTrainConfig(steps=steps, **FAST, **kw),
        base_policy_dir=tiny_base_policy,
        dataset=DatasetConfig(repo_id=config.repo_id, root=str(root)),
        out_dir=tmp_path / name,
        progress=False,
        log=lambda _: None,
    )


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


def test_resume_continues_with_the_same_data_order(tmp_path, tiny_demos, tiny_base_policy, monkeypatch):
    from tmrl_vla.csp.policy import CSPPolicy

    straight = run(tmp_path, tiny_demos, tiny_base_policy, "straight", steps=6, save_every=3)["csp"]
    real_forward, calls = CSPPolicy.forward, {"n": 0}

    def crash_at_step_5(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated crash")
        return real_forward(self, *a, **k)

    monkeypatch.setattr(CSPPolicy, "forward", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, tiny_demos, tiny_base_policy, "crashed", steps=6, save_every=3)
    assert (tmp_path / "crashed" / "train_state.pt").exists()
    monkeypatch.setattr(CSPPolicy, "forward", real_forward)
    resumed = run(tmp_path, tiny_demos, tiny_base_policy, "crashed", steps=6, save_every=3)["csp"]
    a = dict(straight.named_parameters())
    for name, p in resumed.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, a[name]), name
    rows = [(tmp_path / d / "metrics.jsonl").read_text().splitlines() for d in ("straight", "crashed")]
    assert rows[0] == rows[1]  # the row of step 4, logged before the crash, is not doubled


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


def test_two_cpu_processes_end_with_equal_parameters(tmp_path, tiny_demos, tiny_base_policy):
    """accelerate's `launch --cpu --num_processes 2` silently runs one process; torchrun runs two (gloo)."""
    config, root, _ = tiny_demos
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    script = Path(__file__).with_name("ddp_train.py")
    subprocess.run(
        cmd + [str(script), str(tiny_base_policy), config.repo_id, str(root), str(out)],
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
