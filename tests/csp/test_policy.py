import copy

import pytest
import torch

from tmrl_vla.csp.config import CSPConfig
from tmrl_vla.csp.policy import CSPPolicy


def sample(policy_like, batch, noise, **kw):
    return policy_like.predict_action_chunk(dict(batch), noise=noise.clone(), **kw)


def calibrated(policy, batch, **config):
    csp = CSPPolicy.from_base(policy, CSPConfig(**config))
    scales = csp.calibrate_segment_scales([dict(batch)])
    assert scales["image"] > 0 and scales["language"] > 0 and "state" in scales
    return csp


def train_a_few_steps(csp, batch, steps: int) -> None:
    """Adam on the CSP loss at random per-sample sigma: moves LoRA and the sigma embedding off zero."""
    optimizer = torch.optim.Adam(csp.trainable_parameters(), lr=1e-2)
    for _ in range(steps):
        loss, _ = csp.forward(dict(batch), sigma=torch.rand(3))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_identical_to_bare_policy_before_training(fresh):
    policy, batch, noise = fresh
    bare = copy.deepcopy(policy)
    expected = sample(bare, batch, noise)
    csp = calibrated(policy, batch)
    assert torch.equal(sample(csp, batch, noise, sigma=0.0), expected)
    with csp.disable_smoothing():
        assert torch.equal(sample(csp, batch, noise, sigma=torch.tensor([0.3, 0.9, 1.0])), expected)
    assert not torch.allclose(sample(csp, batch, noise, sigma=1.0), expected)


def test_per_sample_sigma(fresh):
    policy, batch, noise = fresh
    csp = calibrated(policy, batch)
    bare_rows = sample(csp, batch, noise, sigma=0.0)
    mixed = sample(csp, batch, noise, sigma=torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(mixed[0], bare_rows[0])
    torch.testing.assert_close(mixed[2], bare_rows[2])
    assert not torch.allclose(mixed[1], bare_rows[1])


def test_training_step_changes_only_adapter_and_sigma_embedding(fresh):
    policy, batch, _ = fresh
    csp = calibrated(policy, batch)
    before = {n: p.detach().clone() for n, p in csp.named_parameters()}
    trainable = {n for n, p in csp.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("sigma_embedding") for n in trainable)
    optimizer = torch.optim.Adam(csp.trainable_parameters(), lr=1e-2)
    got_gradient = set()
    for _ in range(2):  # two steps: LoRA A only moves once B is non-zero
        loss, _ = csp.forward(dict(batch), sigma=torch.tensor([0.2, 0.6, 1.0]))
        optimizer.zero_grad()
        loss.backward()
        got_gradient |= {n for n, p in csp.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        optimizer.step()
    changed = {n for n, p in csp.named_parameters() if not torch.equal(p, before[n])}
    assert changed == got_gradient and changed <= trainable
    assert "sigma_embedding.weight" in changed
    # Only the last VLM layer's query projection is unreachable (SmolVLA never reads that layer's output).
    assert all(".layers.3.self_attn.q_proj." in n for n in trainable - changed)


def test_trained_adapter_at_sigma_zero_equals_plain_peft_lora(fresh, tmp_path):
    from peft import PeftModel

    policy, batch, noise = fresh
    pristine = copy.deepcopy(policy)
    csp = calibrated(policy, batch)
    train_a_few_steps(csp, batch, steps=3)
    assert csp.sigma_embedding.weight.abs().sum() > 0
    csp.peft_model.save_pretrained(tmp_path)
    plain = PeftModel.from_pretrained(pristine, tmp_path)  # stock PEFT, none of our hooks
    expected = sample(plain.get_base_model(), batch, noise)
    assert torch.equal(sample(csp, batch, noise, sigma=0.0), expected)
    assert not torch.equal(sample(csp, batch, noise, sigma=0.5), expected)


def test_unload_gives_the_untouched_policy_back(fresh):
    policy, batch, noise = fresh
    reference = {k: v.clone() for k, v in policy.state_dict().items()}
    expected = sample(copy.deepcopy(policy), batch, noise)
    csp = calibrated(policy, batch)
    back = csp.unload()
    assert back is policy
    assert "embed_prefix" not in vars(back.model)
    assert not back.model.action_time_mlp_in._forward_hooks
    assert back.state_dict().keys() == reference.keys()
    assert all(torch.equal(back.state_dict()[k], v) for k, v in reference.items())
    assert torch.equal(sample(back, batch, noise), expected)


def test_context_noise_modes_and_width_check(fresh):
    policy, batch, noise = fresh
    csp = calibrated(policy, batch)
    d = csp.embed_width
    tiled = torch.randn(3, d)
    a = sample(csp, batch, noise, sigma=0.5, context_noise=tiled)
    b = sample(csp, batch, noise, sigma=0.5, context_noise=tiled)
    assert torch.equal(a, b)  # explicit context noise makes sampling deterministic
    with pytest.raises(ValueError, match="embedding width"):
        sample(csp, batch, noise, sigma=0.5, context_noise=torch.randn(3, d + 1))


@pytest.mark.parametrize("mode", ["iid", "tiled"])
def test_sampled_context_noise_comes_from_the_given_generator(fresh, mode):
    """With no explicit context noise, a seeded generator fixes the draw whatever torch's global
    generator does; without one the global generator is used (as in CSP training)."""
    policy, batch, noise = fresh
    csp = calibrated(policy, batch, context_noise=mode)

    def draw(seed):
        return sample(csp, batch, noise, sigma=0.7, generator=torch.Generator().manual_seed(seed))

    torch.manual_seed(1)
    first = draw(0)
    torch.manual_seed(2)
    assert torch.equal(draw(0), first)
    assert not torch.equal(draw(1), first)
    torch.manual_seed(3)
    a = sample(csp, batch, noise, sigma=0.7)
    torch.manual_seed(3)
    assert torch.equal(sample(csp, batch, noise, sigma=0.7), a)


def test_bad_sigma_is_rejected(fresh):
    policy, batch, noise = fresh
    csp = calibrated(policy, batch)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sample(csp, batch, noise, sigma=1.5)
    with pytest.raises(ValueError, match="shape"):
        sample(csp, batch, noise, sigma=torch.tensor([0.1, 0.2]))


def test_segment_noise_needs_calibration(fresh):
    policy, batch, noise = fresh
    csp = CSPPolicy.from_base(policy)
    with pytest.raises(RuntimeError, match="calibrate_segment_scales"):
        sample(csp, batch, noise, sigma=0.5)


def test_unsupported_policy_type():
    class FakeConfig:
        type = "act"

    class Fake(torch.nn.Module):
        config = FakeConfig()

    with pytest.raises(NotImplementedError, match="smolvla"):
        CSPPolicy.from_base(Fake())


def test_save_load_round_trip_and_wrong_base(fresh, tmp_path):
    import json

    policy, batch, noise = fresh
    pristine, other = copy.deepcopy(policy), copy.deepcopy(policy)
    csp = calibrated(policy, batch)
    train_a_few_steps(csp, batch, steps=2)
    csp.save_pretrained(tmp_path)
    assert {"adapter_config.json", "adapter_model.safetensors", "csp_config.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
    meta = json.loads((tmp_path / "csp_config.json").read_text())
    assert meta["csp"]["num_timesteps"] == 1000 and meta["csp"]["segment_scale"]["image"] > 0
    assert meta["versions"]["lerobot"].startswith("0.6")

    loaded = CSPPolicy.from_pretrained(tmp_path, base=pristine)
    for sigma in (0.0, 0.7):
        ctx = torch.randn(3, csp.embed_width, generator=torch.Generator().manual_seed(5))
        a = sample(csp, batch, noise, sigma=sigma, context_noise=ctx)
        b = sample(loaded, batch, noise, sigma=sigma, context_noise=ctx)
        assert torch.equal(a, b)

    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    with pytest.raises(ValueError, match="trained on base"):
        CSPPolicy.from_pretrained(tmp_path, base=other)


def test_prefix_computed_once_is_reused_for_sampling(fresh):
    policy, batch, noise = fresh
    csp = calibrated(policy, batch)
    calls = {"n": 0}
    vision = csp.flow_model.vlm_with_expert.vlm.model.vision_model
    handle = vision.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    ctx = torch.randn(3, csp.embed_width, generator=torch.Generator().manual_seed(9))
    expected = sample(csp, batch, noise, sigma=0.4, context_noise=ctx)
    calls["n"] = 0
    cache = csp.encode_prefix(dict(batch))
    segments = csp.prefix_segments(cache)
    got = sample(csp, batch, noise, sigma=0.4, context_noise=ctx, prefix=cache)
    handle.remove()
    assert calls["n"] == 1  # the vision encoder ran once for features and sampling together
    assert torch.equal(got, expected)
    assert segments.image.sum(1).tolist() == [16, 16, 16]  # 16 image tokens per 64 x 64 camera
    assert not (segments.image & segments.language).any() and segments.state.sum(1).tolist() == [1, 1, 1]


def test_from_pretrained_by_repo_id_from_the_local_hub_cache(fresh, tmp_path, local_hub):
    """The real Hub loading path (snapshot_download on a repo id), served offline from a populated cache."""
    policy, batch, noise = fresh
    pristine = copy.deepcopy(policy)
    csp = calibrated(policy, batch)
    local_hub(csp.save_pretrained(tmp_path / "adapter"), "someone/tiny-csp-adapter")
    loaded = CSPPolicy.from_pretrained("someone/tiny-csp-adapter", base=pristine)
    assert loaded.config == csp.config
    ctx = torch.randn(3, csp.embed_width, generator=torch.Generator().manual_seed(4))
    assert torch.equal(
        sample(loaded, batch, noise, sigma=0.6, context_noise=ctx),
        sample(csp, batch, noise, sigma=0.6, context_noise=ctx),
    )


def test_card_is_written_and_updated_not_overwritten(fresh, tmp_path):
    policy, batch, _ = fresh
    csp = calibrated(policy, batch)
    csp.save_pretrained(tmp_path)
    readme = tmp_path / "README.md"
    text = readme.read_text()
    assert text.count("<!-- tmrl_vla:csp -->") == 1 and "T = 1000" in text and "smolvla" in text
    readme.write_text(text + "\nNotes the owner added.\n")
    csp.save_pretrained(tmp_path, repo_id="someone/adapter")
    again = readme.read_text()
    assert again.count("<!-- tmrl_vla:csp -->") == 1  # our section replaced in place
    assert "Notes the owner added." in again and "someone/adapter" in again


def test_push_to_hub_uploads_the_adapter_with_its_card(fresh, fake_hub):
    policy, batch, _ = fresh
    csp = calibrated(policy, batch)
    url = csp.push_to_hub("someone/tiny-csp")
    assert url == "https://huggingface.co/someone/tiny-csp/commit/c0ffee"
    upload = fake_hub[1]
    assert upload["repo_id"] == "someone/tiny-csp"
    assert {"adapter_config.json", "adapter_model.safetensors", "csp_config.json", "README.md"} <= set(upload["files"])
    assert 'CSPPolicy.from_pretrained("someone/tiny-csp"' in upload["files"]["README.md"].decode()


def test_merged_adapter_equals_peft_merged_lora_and_unmerges(fresh, tmp_path):
    from peft import PeftModel

    policy, batch, noise = fresh
    pristine, original = copy.deepcopy(policy), copy.deepcopy(policy).state_dict()
    csp = calibrated(policy, batch)
    train_a_few_steps(csp, batch, steps=3)
    eps = torch.randn(3, csp.embed_width)
    unmerged = {s: sample(csp, batch, noise, sigma=s, context_noise=eps) for s in (0.0, 0.5)}
    csp.peft_model.save_pretrained(tmp_path)
    plain = PeftModel.from_pretrained(pristine, tmp_path).merge_and_unload()  # stock PEFT, merged, no hooks

    csp.merge_adapter()
    assert csp.merged
    from peft.tuners.tuners_utils import BaseTunerLayer

    assert not any(isinstance(m, BaseTunerLayer) for m in csp.modules())  # no per-layer wrapper left
    assert torch.equal(sample(csp, batch, noise, sigma=0.0), sample(plain, batch, noise))
    from safetensors.torch import load_file

    csp.save_pretrained(tmp_path / "while_merged")  # writes the LoRA weights themselves, unchanged
    saved, before = (load_file(d / "adapter_model.safetensors") for d in (tmp_path / "while_merged", tmp_path))
    assert saved.keys() == before.keys() and all(torch.equal(saved[k], before[k]) for k in saved)
    assert csp.merged and not any(isinstance(m, BaseTunerLayer) for m in csp.modules())
    torch.testing.assert_close(sample(csp, batch, noise, sigma=0.5, context_noise=eps), unmerged[0.5])
    with pytest.raises(RuntimeError, match="unmerge_adapter"):
        csp.forward(dict(batch), sigma=torch.rand(3))

    csp.unmerge_adapter()
    assert not csp.merged
    torch.testing.assert_close(sample(csp, batch, noise, sigma=0.0), unmerged[0.0])
    csp.merge_adapter()
    back = csp.unload()  # unmerges first: the base weights come back without the adapter folded in
    assert back.state_dict().keys() == original.keys()
    for k, v in original.items():
        torch.testing.assert_close(back.state_dict()[k], v)


def test_flow_draws_fix_the_noise_and_time_and_base_only_gives_the_base(fresh):
    from tmrl_vla.csp.trainer import distill_loss

    policy, batch, noise = fresh
    bare = copy.deepcopy(policy)
    csp = calibrated(policy, batch)
    time, sigma = torch.tensor([0.2, 0.5, 0.9]), torch.tensor([0.0, 0.0, 0.7])
    context = torch.randn(3, csp.embed_width, generator=torch.Generator().manual_seed(3))
    with csp.flow_draws(noise, time) as first:
        loss_a, _ = csp.forward(dict(batch), sigma=sigma, context_noise=context, reduction="none")
    with csp.flow_draws(noise, time) as second:
        loss_b, _ = csp.forward(dict(batch), sigma=sigma, context_noise=context, reduction="none")
    assert len(first) == 1 and first[0].shape == (3, 10, 32)
    torch.testing.assert_close(loss_a, loss_b)  # the same draws, so the same loss (LeRobot would draw anew)
    torch.testing.assert_close(first[0], second[0])
    assert not {"sample_noise", "sample_time"} & set(vars(csp.flow_model))  # the family's own draws are back
    with pytest.raises(ValueError, match="noise of shape"), csp.flow_draws(noise[:2], time):
        csp.forward(dict(batch), sigma=torch.zeros(3))
    # untrained, the adapted policy is the base at sigma 0: nothing to distil
    assert float(distill_loss(csp, dict(batch), 2, noise, time, first[0]).detach()) < 1e-10
    train_a_few_steps(csp, batch, steps=3)
    with csp.flow_draws(noise, time) as adapted:
        csp.forward(dict(batch), sigma=torch.tensor([0.0, 0.0, 0.7]), reduction="none")
    distance = distill_loss(csp, dict(batch), 2, noise, time, adapted[0])
    assert float(distance.detach()) > 1e-6
    distance.backward()  # the gradient reaches the adapter through the adapted velocity only
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in csp.named_parameters() if "lora_" in n)
    with csp.base_only():  # LoRA off at sigma 0: the bare policy's own samples
        assert torch.equal(sample(csp, batch, noise, sigma=0.0), sample(bare, batch, noise))
