"""What more critic updates cost: one decision's SAC updates with the preset's ``utd`` and with another.

    python eval/bench_updates.py [--utd 8] [--repeats 12] [--threads 1]

Each variant is a fresh agent of the recipe's preset (heads, critics, batch, updates per decision),
the same but for ``sac.utd``, on the same replay of random transitions of the embedded default's
widths; the updates do not depend on the values, only on the shapes. One repeat is one decision's
worth of updates (``updates_per_decision`` calls of ``SACAgent.update``), timed interleaved with
the other variant. The last line is one JSON object with the medians and their ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch
from benchlib import interleaved_medians, ratio

from tmrl_vla.finetune import default_rl
from tmrl_vla.rl.agent import build_agent
from tmrl_vla.rl.replay import ReplayBuffer

# The embedded default's widths (rl.observation.feature_width): the 2 x 2 grid of image cells and the
# language mean, each 96 wide (the tiny SmolVLA's embed width), plus 6 joints; z of 6.
OBS_DIM, ACTION_DIM, EMBED_DIM = (4 + 1) * 96 + 6, 6, 96


def random_replay(rows: int, heads: tuple[str, ...], generator: torch.Generator) -> ReplayBuffer:
    dims = {"z": ACTION_DIM, "y": 1, "eps_c": EMBED_DIM}
    replay = ReplayBuffer(rows, OBS_DIM, {h: dims[h] for h in heads})
    replay.add(
        torch.randn(rows, OBS_DIM, generator=generator),
        {h: torch.rand(rows, dims[h], generator=generator) * 2 - 1 for h in heads},
        (torch.rand(rows, generator=generator) < 0.1).float(),
        (torch.rand(rows, generator=generator) < 0.05).float(),
        torch.randn(rows, OBS_DIM, generator=generator),
    )
    return replay


def critic_steps(agent) -> int:
    param = next(agent.critics.parameters())
    return int(agent.critic_opt.state[param]["step"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utd", type=int, default=8, help="the variant's critic updates per actor update")
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--rows", type=int, default=3200, help="replay size (the runs' 400 decisions x 8 envs)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.utd < 1 or args.repeats < 1 or args.rows < 1:
        parser.error("--utd, --repeats and --rows must be >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rl = default_rl()
    generator = torch.Generator().manual_seed(0)
    replay = random_replay(args.rows, rl.agent.active_heads, generator)
    variants = {"preset": rl.sac.utd, "variant": args.utd}
    agents = {}
    for name, utd in variants.items():
        sac = dataclasses.replace(rl.sac, utd=utd)
        agent = build_agent(rl.agent, sac, obs_dim=OBS_DIM, action_dim=ACTION_DIM, embed_dim=EMBED_DIM)
        agent.set_observation_stats(torch.zeros(OBS_DIM), torch.ones(OBS_DIM))
        agents[name] = agent

    def one_decision(agent):
        for _ in range(rl.sac.updates_per_decision):
            agent.update(replay, generator)

    runs = {name: (lambda a=agent: one_decision(a)) for name, agent in agents.items()}
    med = interleaved_medians(runs, args.repeats, grad=True)
    result = {
        "seconds_per_decision": {f"utd={variants[n]}": round(s, 4) for n, s in med.items()},
        # Adam's step count of the critics, warm-up call included: what each variant really did.
        "critic_steps": {f"utd={variants[n]}": critic_steps(a) for n, a in agents.items()},
        "ratio": ratio(med["variant"], med["preset"]),
        "updates_per_decision": rl.sac.updates_per_decision,
        "batch": rl.sac.batch_size,
        "repeats": args.repeats,
        "threads": args.threads,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
