"""Success@K of the BC policy and of its CSP adapter at several sigma, on a context shift.

    python eval/success_at_k.py                                  # the embedded default (built if missing)
    python eval/success_at_k.py --base DIR --adapter DIR --shift moved_camera --states 24 --k 12
    python eval/success_at_k.py --compare image=A/success_at_k.json video=B/success_at_k.json --out DIR

N fixed initial states x K rollouts each with fresh flow (and context) noise; Success@K is the
fraction of states with at least one success in the first K rollouts (TMRL paper, section 4).
Compared: BC; BC trained for CSP's extra time (``--extra-bc``); BC with the image blanked (what
ignoring the image gives); CSP at each sigma and with sigma drawn per decision. Beside each, the
in-distribution success (does CSP keep imitation at sigma = 0?). Writes a PNG of Success@K vs K and
a JSON summary, and prints the summary as its last line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import tmrl_vla.envs  # noqa: F401  (headless GL before mujoco)
from tmrl_vla.coverage import success_at_k
from tmrl_vla.envs.pick_cube import PickCubeConfig, PickCubeEnv
from tmrl_vla.rollout import LeRobotChunkPolicy, evaluate


class PerDecisionSigma(LeRobotChunkPolicy):
    """CSP with sigma ~ U[0, 1] drawn afresh for every sample at every decision (an RL agent's warm-up)."""

    def __call__(self, obs, task, noise=None):
        self.predict_kwargs["sigma"] = torch.rand(obs["observation.state"].shape[0])
        return super().__call__(obs, task, noise)


class BlankImages:
    """The image-blanked control: the wrapped policy sees mid-grey frames, i.e. it must ignore the image."""

    def __init__(self, policy) -> None:
        self.policy = policy

    def __call__(self, obs, task):
        grey = {k: (v * 0 + 128 if k.startswith("observation.images.") else v) for k, v in obs.items()}
        return self.policy(grey, task)


def default_assets() -> tuple[Path, Path]:
    from tmrl_vla.assets import AssetsConfig, build_default_assets
    from tmrl_vla.cache import AssetCache

    assets = build_default_assets(AssetsConfig(), AssetCache())
    return assets.policy_dir, assets.csp_dir


def plot(curves: dict[str, list[float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, ys in curves.items():
        style = dict(color="black", lw=2.5) if name == "BC" else dict(lw=1.5)
        ax.plot(range(1, len(ys) + 1), ys, marker="o", ms=3, label=name, **style)
    ax.set_xlabel("K (rollouts per initial state)")
    ax.set_ylabel("Success@K")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(runs: dict[str, str], out: Path) -> None:
    """One Success@K figure of several earlier runs (curves named ``label: policy``)."""
    summaries = {label: json.loads(Path(path).read_text()) for label, path in runs.items()}
    curves = {
        f"{label}: {name}": v["success_at_k"] for label, s in summaries.items() for name, v in s["policies"].items()
    }
    shifts = {s["shift"] for s in summaries.values()}
    out.mkdir(parents=True, exist_ok=True)
    plot(curves, out / "success_at_k_compare.png", f"Success@K on {', '.join(sorted(shifts))}")
    print(f"wrote {out / 'success_at_k_compare.png'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, help="LeRobot policy checkpoint (default: the embedded default's)")
    parser.add_argument("--adapter", type=Path, help="CSP adapter directory (default: the embedded default's)")
    parser.add_argument("--shift", default="moved_camera", help="context shift of the evaluated task")
    parser.add_argument("--states", type=int, default=20)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--sigmas", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--in-dist-episodes", type=int, default=30)
    parser.add_argument("--extra-bc", type=Path, help="a BC checkpoint trained for CSP's extra time (the fair control)")
    parser.add_argument("--groups", default="bc,blank,csp,random", help="which of bc,blank,csp,random to run")
    parser.add_argument("--out", type=Path, default=Path("outputs/success_at_k"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="LABEL=JSON",
        help="plot earlier runs' success_at_k.json files together (one PNG under --out), run nothing",
    )
    args = parser.parse_args(argv)
    if args.compare:
        compare(dict(item.split("=", 1) for item in args.compare), args.out)
        return
    if args.threads:
        torch.set_num_threads(args.threads)

    from tmrl_vla.csp.policy import CSPPolicy
    from tmrl_vla.policies import load_lerobot_policy

    base_dir, adapter_dir = (args.base, args.adapter)
    if base_dir is None or adapter_dir is None:  # fill in only what was not given
        default_base, default_adapter = default_assets()
        base_dir, adapter_dir = base_dir or default_base, adapter_dir or default_adapter
    bc, pre, post = load_lerobot_policy(base_dir)
    csp_base, _, _ = load_lerobot_policy(base_dir)
    csp = CSPPolicy.from_pretrained(adapter_dir, base=csp_base)
    shifted = PickCubeConfig.with_shift(args.shift)
    args.out.mkdir(parents=True, exist_ok=True)

    groups = set(args.groups.split(","))
    policies = {}
    if "bc" in groups:
        policies["BC"] = LeRobotChunkPolicy(bc, pre, post)
    if "bc" in groups and args.extra_bc is not None:
        extra, _, _ = load_lerobot_policy(args.extra_bc)
        policies["BC (same extra training time)"] = LeRobotChunkPolicy(extra, pre, post)
    if "blank" in groups:
        policies["BC, image blanked"] = BlankImages(LeRobotChunkPolicy(bc, pre, post))
    if "csp" in groups:
        for s in (float(x) for x in args.sigmas.split(",")):
            policies[f"CSP sigma={s:g}"] = LeRobotChunkPolicy(csp, pre, post, sigma=s)
    if "random" in groups:
        policies["CSP sigma~U[0,1] per decision"] = PerDecisionSigma(csp, pre, post, sigma=0.0)

    summary: dict = {"shift": args.shift, "base": str(base_dir), "adapter": str(adapter_dir), "policies": {}}
    start = time.perf_counter()
    for name, policy in policies.items():
        cov = success_at_k(policy, lambda: PickCubeEnv(shifted), num_states=args.states, k=args.k)
        in_dist = evaluate(policy, PickCubeEnv, num_episodes=args.in_dist_episodes, num_envs=10, seed=100_000)
        summary["policies"][name] = {**cov.summary(), "in_distribution": in_dist.summary()}
        print(
            f"{name:<16} Success@{args.k} {cov.success_at_k[-1]:.2f}  per-rollout {cov.per_rollout_success:.2f}  "
            f"in-distribution {in_dist.success_rate:.2f}",
            flush=True,
        )
    summary["seconds"] = time.perf_counter() - start
    curves = {n: v["success_at_k"] for n, v in summary["policies"].items()}
    plot(curves, args.out / "success_at_k.png", f"Success@K on '{args.shift}' ({args.states} initial states)")
    (args.out / "success_at_k.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
