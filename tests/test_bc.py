import json

import pytest
import torch
from lerobot.configs.default import DatasetConfig

from tmrl_vla.bc import BCConfig, random_shift, train_bc
from tmrl_vla.policies import load_lerobot_policy

FAST = {"log_every": 5, "warmup_steps": 2, "batch_size": 8, "num_threads": 1}


def test_random_shift_keeps_shape_and_is_identity_at_zero():
    x = torch.rand(4, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(random_shift(x, 0, g), x)
    y = random_shift(x, 2, g)
    assert y.shape == x.shape and not torch.equal(y, x)


def test_bc_writes_a_loadable_lerobot_checkpoint(tiny_demos, tmp_path):
    config, root, _ = tiny_demos
    metrics = train_bc(
        BCConfig(steps=6, save_every=100, **FAST),
        dataset=DatasetConfig(repo_id=config.repo_id, root=str(root)),
        out_dir=tmp_path,
        progress=False,
        log=lambda _: None,
    )
    assert metrics["steps_run"] == 6 and torch.isfinite(torch.tensor(metrics["final_loss"]))
    assert not (tmp_path / "train_state.safetensors").exists()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [set(r) for r in rows] == [{"step", "bc/loss", "bc/lr"}] and rows[0]["step"] == 5
    policy, pre, post = load_lerobot_policy(tmp_path)
    assert type(policy).__name__ == "SmolVLAPolicy"
    assert policy.config.chunk_size == 10 and policy.config.n_action_steps == 5


def test_bc_resumes_after_a_crash_to_the_same_parameters(tiny_demos, tmp_path, monkeypatch):
    config, root, _ = tiny_demos
    cfg = BCConfig(steps=8, save_every=4, image_shift=2, **FAST)
    kwargs = dict(dataset=DatasetConfig(repo_id=config.repo_id, root=str(root)), progress=False, log=lambda _: None)
    train_bc(cfg, out_dir=tmp_path / "straight", **kwargs)

    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    real_forward, calls = SmolVLAPolicy.forward, {"n": 0}

    def crash_at_step_6(self, batch, *a, **k):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt("simulated crash")
        return real_forward(self, batch, *a, **k)

    monkeypatch.setattr(SmolVLAPolicy, "forward", crash_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        train_bc(cfg, out_dir=tmp_path / "crashed", **kwargs)
    assert (tmp_path / "crashed" / "train_state.safetensors").exists()
    monkeypatch.setattr(SmolVLAPolicy, "forward", real_forward)
    metrics = train_bc(cfg, out_dir=tmp_path / "crashed", **kwargs)
    assert metrics["steps_run"] == 4  # resumed from the step-4 checkpoint

    from safetensors.torch import load_file

    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "crashed" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_bc_config_validation():
    with pytest.raises(ValueError):
        BCConfig(steps=0)
    with pytest.raises(ValueError):
        BCConfig(image_shift=-1)
