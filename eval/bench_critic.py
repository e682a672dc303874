"""Critic-ensemble update speed: one batched computation vs a Python loop over the critics.

    python eval/bench_critic.py [--critics 5] [--hidden 256] [--batch 256] [--repeats 30] [--device cuda]

Both variants run the same full SAC critic update (forward of N critics, TD loss against a fixed
target, backward, Adam step) on the same weights; they are timed interleaved and medians compared.
The device is CUDA when there is one (the speed-up a batched ensemble is for: one kernel launch
per layer instead of N), else the CPU, where the matmuls are FLOP-bound and batching saves only
Python overhead. The last line is one JSON object: ``{"ensemble_speedup": s, "n_critics": n, ...}``.
"""

from __future__ import annotations

import argparse
import copy
import json

import torch
from benchlib import interleaved_medians

from tmrl_vla.rl.critic import CriticConfig, CriticEnsemble
from tmrl_vla.rl.sac import critic_loss


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--critics", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # The embedded default's sizes: 96-wide pooled prefix + 6 joints, z of 6, eps_c of 96.
    cfg = CriticConfig(obs_dim=102, action_dim=6, embed_dim=96, num_critics=args.critics, hidden=args.hidden)
    batched = CriticEnsemble(cfg).to(device)
    looped = copy.deepcopy(batched)
    opt_b = torch.optim.Adam(batched.parameters(), lr=3e-4)
    opt_l = torch.optim.Adam(looped.parameters(), lr=3e-4)
    b = args.batch
    obs = torch.randn(b, cfg.obs_dim, device=device)
    act = {
        "z": torch.rand(b, 6, device=device) * 2 - 1,
        "y": torch.rand(b, 1, device=device) * 2 - 1,
        "eps_c": torch.randn(b, 96, device=device),
    }
    target = torch.randn(b, device=device)

    def step(model, opt, forward):
        loss = critic_loss(forward(model)(obs, act), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    runs = {
        "batched": lambda: step(batched, opt_b, lambda m: m.forward),
        "looped": lambda: step(looped, opt_l, lambda m: m.forward_looped),
    }
    med = interleaved_medians(runs, args.repeats, grad=True)
    result = {
        "ensemble_speedup": round(med["looped"] / med["batched"], 3),
        "n_critics": args.critics,
        "hidden": args.hidden,
        "batch": b,
        "repeats": args.repeats,
        "device": device.type,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
