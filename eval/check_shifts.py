"""Is each context shift a fine-tuning problem? Expert, base policy and CSP coverage per shift.

    python eval/check_shifts.py                                   # every named shift, the embedded default
    python eval/check_shifts.py --shifts rolled_camera,small_cube --episodes 50 --states 20 --k 8

A shift is a fine-tuning problem for the embedded default when:

* the scripted expert still solves it (success >= ``--expert-min``, 0.95): the motion the demos
  hold still works, only what the camera sees changed;
* the base (BC) policy mostly fails (success <= ``--base-max``, 0.30): there is something to learn;
* CSP covers it better than BC: Success@K of the CSP policy at ``--sigma`` above BC's Success@K
  from the same initial states (``tmrl_vla.coverage``), so exploration in its noise space can find
  reward.

Writes ``shift_check.json`` (every number with its 95% interval and the command) and
``shift_check.md`` (one table) under ``--out``, and prints the table. Shifts already in the JSON
are not measured again (``--force`` does), so a long check can be resumed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import tmrl_vla.envs  # noqa: F401  (headless GL before mujoco)
from tmrl_vla.coverage import success_at_k
from tmrl_vla.envs.expert import expert_success
from tmrl_vla.envs.pick_cube import SHIFTS, PickCubeConfig, PickCubeEnv
from tmrl_vla.rollout import LeRobotChunkPolicy, evaluate, wilson_interval


def rate(wins: int, n: int) -> dict:
    lo, hi = wilson_interval(wins, n)
    return {"rate": wins / n, "ci95": [lo, hi], "n": n}


def check_shift(shift: str, bc: LeRobotChunkPolicy, csp: LeRobotChunkPolicy, args) -> dict:
    config = PickCubeConfig.with_shift(shift)
    make_env = lambda: PickCubeEnv(config)  # noqa: E731
    start = time.perf_counter()
    expert = expert_success(config, args.episodes)
    base = evaluate(bc, make_env, num_episodes=args.episodes, num_envs=10, seed=100_000, n_exec=bc.n_action_steps)
    coverage = {
        name: success_at_k(policy, make_env, num_states=args.states, k=args.k, num_envs=10)
        for name, policy in (("bc", bc), ("csp", csp))
    }
    hits = {name: int(c.successes.any(axis=0).sum()) for name, c in coverage.items()}
    row = {
        "expert": rate(sum(expert), len(expert)),
        "base": rate(int(sum(base.successes)), base.n),
        f"bc_success_at_{args.k}": rate(hits["bc"], args.states),
        f"csp_success_at_{args.k}": rate(hits["csp"], args.states),
        "csp_per_rollout": coverage["csp"].per_rollout_success,
        "bc_per_rollout": coverage["bc"].per_rollout_success,
        "seconds": round(time.perf_counter() - start, 1),
    }
    row["fine_tuning_problem"] = (
        row["expert"]["rate"] >= args.expert_min and row["base"]["rate"] <= args.base_max and hits["csp"] > hits["bc"]
    )
    return row


def shareable_command(argv: list[str]) -> str:
    """The command line without the paths of this machine (a flag whose value is an absolute path is
    left out with it): what a reader reruns with their own --base, --adapter and --out."""
    kept, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if Path(arg.partition("=")[2] or arg).is_absolute():
            continue
        if arg.startswith("--") and "=" not in arg and i + 1 < len(argv) and Path(argv[i + 1]).is_absolute():
            skip = True
            continue
        kept.append(arg)
    return " ".join(["python eval/check_shifts.py", *kept])


def table(results: dict, k: int) -> str:
    def cell(r: dict) -> str:
        return f"{r['rate']:.2f} ({r['ci95'][0]:.2f}-{r['ci95'][1]:.2f})"

    lines = [
        f"| shift | expert | base (BC) | BC Success@{k} | CSP Success@{k} | fine-tuning problem |",
        "|---|---|---|---|---|---|",
    ]
    for shift, r in results.items():
        lines.append(
            f"| {shift} | {cell(r['expert'])} | {cell(r['base'])} | {cell(r[f'bc_success_at_{k}'])} | "
            f"{cell(r[f'csp_success_at_{k}'])} | {'yes' if r['fine_tuning_problem'] else 'no'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shifts", default=None, help="comma-separated names (default: every named shift but none)")
    parser.add_argument("--episodes", type=int, default=50, help="episodes for the expert and the base policy")
    parser.add_argument("--states", type=int, default=20, help="initial states for Success@K")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--sigma", type=float, default=0.5, help="the CSP policy's sigma for Success@K")
    parser.add_argument("--expert-min", type=float, default=0.95)
    parser.add_argument("--base-max", type=float, default=0.30)
    parser.add_argument("--base", type=Path, help="LeRobot policy checkpoint (default: the embedded default's)")
    parser.add_argument("--adapter", type=Path, help="its CSP adapter (default: the embedded default's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--force", action="store_true", help="measure shifts already in the JSON again")
    parser.add_argument("--out", type=Path, default=Path("outputs/shift_check"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shifts = args.shifts.split(",") if args.shifts else [s for s in SHIFTS if s != "none"]
    unknown = [s for s in shifts if s not in SHIFTS]
    if unknown:
        parser.error(f"unknown shifts {unknown}; known: {', '.join(SHIFTS)}")
    from tmrl_vla.csp.policy import CSPPolicy
    from tmrl_vla.policies import load_lerobot_policy

    if args.base is None:
        from tmrl_vla.assets import default_policy_and_adapter

        args.base, args.adapter = map(Path, default_policy_and_adapter())
    policy, pre, post = load_lerobot_policy(args.base)
    bc = LeRobotChunkPolicy(policy, pre, post)
    csp_policy, _, _ = load_lerobot_policy(args.base)
    csp = LeRobotChunkPolicy(CSPPolicy.from_pretrained(args.adapter, base=csp_policy).merge_adapter(), pre, post)
    csp.predict_kwargs["sigma"] = args.sigma
    args.out.mkdir(parents=True, exist_ok=True)
    saved = args.out / "shift_check.json"
    report = json.loads(saved.read_text()) if saved.exists() else {"results": {}}
    report["command"] = shareable_command(sys.argv[1:] if argv is None else argv)
    report["settings"] = {k: v for k, v in vars(args).items() if k not in ("base", "adapter", "out", "force")}
    for shift in shifts:
        if shift in report["results"] and not args.force:
            continue
        report["results"][shift] = check_shift(shift, bc, csp, args)
        saved.write_text(json.dumps(report, indent=2))
        r = report["results"][shift]
        print(
            f"{shift}: expert {r['expert']['rate']:.2f} base {r['base']['rate']:.2f} "
            f"S@{args.k} bc {r[f'bc_success_at_{args.k}']['rate']:.2f} csp {r[f'csp_success_at_{args.k}']['rate']:.2f}"
            f" ({r['seconds']} s)",
            flush=True,
        )
    text = table({s: report["results"][s] for s in report["results"]}, args.k)
    (args.out / "shift_check.md").write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
