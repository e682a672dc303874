"""At sigma = 1 the noised context must carry no usable information about the clean context."""

import torch

from tmrl_vla.csp.config import CSPConfig
from tmrl_vla.csp.policy import CSPPolicy


def labelled_images(n: int, generator: torch.Generator):
    """Grey noise images with a red square on the left (label 0) or the right (label 1)."""
    images = 0.4 + 0.1 * torch.rand(n, 3, 64, 64, generator=generator)
    labels = torch.randint(0, 2, (n,), generator=generator)
    for i, y in enumerate(labels.tolist()):
        col = 6 if y == 0 else 42
        row = int(torch.randint(10, 40, (1,), generator=generator))
        images[i, :, row : row + 14, col : col + 14] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    return images, labels


def image_tokens(csp: CSPPolicy, batch: dict, sigma: float) -> torch.Tensor:
    """Mean-pooled image tokens of the (noised) prefix, through the wrapped embed_prefix."""
    policy, flow = csp.base_policy, csp.flow_model
    images, masks = policy.prepare_images(batch)
    b = batch["observation.state"].shape[0]
    with torch.no_grad(), csp.conditioned(sigma, b):
        embs, pad, att = flow.embed_prefix(
            images,
            masks,
            batch["observation.language.tokens"],
            batch["observation.language.attention_mask"],
            state=policy.prepare_state(batch),
        )
    seg = csp.backend.segments(flow, (), {"lang_tokens": batch["observation.language.tokens"]}, (embs, pad, att))
    return (embs * seg.image[..., None]).sum(1) / seg.image.sum(1, keepdim=True)


def probe_accuracy(x_train, y_train, x_test, y_test) -> float:
    """Ridge-regression classifier on standardised features (closed form, no tuning)."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mu) / sd, (x_test - mu) / sd
    a1, b1 = torch.cat([a, torch.ones(len(a), 1)], 1), torch.cat([b, torch.ones(len(b), 1)], 1)
    w = torch.linalg.solve(a1.T @ a1 + 1.0 * torch.eye(a1.shape[1]), a1.T @ (2.0 * y_train - 1))
    return float(((b1 @ w > 0).long() == y_test).float().mean())


def test_sigma_one_leaves_no_usable_context(tiny_policy_and_batch):
    import copy

    policy, batch = tiny_policy_and_batch
    g = torch.Generator().manual_seed(0)
    n = 300
    images, labels = labelled_images(2 * n, g)
    big = {
        "observation.images.front": images,
        "observation.state": torch.zeros(2 * n, 6),
        "observation.language.tokens": batch["observation.language.tokens"][:1].expand(2 * n, -1),
        "observation.language.attention_mask": batch["observation.language.attention_mask"][:1].expand(2 * n, -1),
    }
    csp = CSPPolicy.from_base(copy.deepcopy(policy), CSPConfig())
    csp.calibrate_segment_scales([{**batch}])
    torch.manual_seed(1)
    clean = image_tokens(csp, big, 0.0)
    noised = image_tokens(csp, big, 1.0)
    acc_clean = probe_accuracy(clean[:n], labels[:n], clean[n:], labels[n:])
    acc_noised = probe_accuracy(noised[:n], labels[:n], noised[n:], labels[n:])
    assert acc_clean > 0.95  # the clean tokens encode the label
    assert acc_noised < 0.62  # chance is 0.5; 300 test samples give a standard error of ~0.03
