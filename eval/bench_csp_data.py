"""CSP training on the same demos stored as images or as video, read in memory or streamed: wall
time, loop speed and peak memory, each configuration in its own process, interleaved.

    python eval/bench_csp_data.py                       # 200 and 50 episodes, 200 steps, 2 rounds, 2 workers
    python eval/bench_csp_data.py --episodes 200 --small 50 --steps 200 --repeats 2 --out outputs/bench_csp_data

Configurations (loader / storage / episodes): in memory from images, and streamed (LeRobot's
DataLoader with 0 and with ``--workers`` worker processes) from images and from video, at N
episodes; in memory and streamed video also at the small size, so that what grows with the
dataset shows. The demos are the embedded default's (the scripted expert, seed 0), recorded once
per storage and size under ``--out``; the base policy is the embedded default's BC policy (built
into the cache if missing). Every run trains a fresh adapter for ``--steps`` steps at the default
batch (32) and seed (0), in a subprocess, while this process samples the memory of that
subprocess and its DataLoader workers together every 0.1 s, as PSS (proportional set size: pages
the forked workers share with their parent are counted once, which a sum of RSS would count per
process). The rounds interleave the configurations so that load drifts hit all of them. The last
line is one JSON object: per configuration the median wall time (process start to exit, decoding
included), loop seconds, steps per second and peak PSS over the rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

CHILD = """
import json, sys
from lerobot.configs.default import DatasetConfig
from tmrl_vla.csp.trainer import CSPTrainConfig, train_csp
base, repo_id, root, out, loader, steps, workers, threads = sys.argv[1:9]
config = CSPTrainConfig(steps=int(steps), data_loader=loader, num_workers=int(workers), log_every=int(steps),
                        save_every=10**9, num_threads=int(threads) or None)
dataset = DatasetConfig(repo_id=repo_id, root=root, video_backend="pyav")
result = train_csp(config, base_policy_dir=base, dataset=dataset, out_dir=out, progress=False, log=lambda _: None)
print(json.dumps({"loop_seconds": result["csp_train_seconds"]}))
"""


def record(out: Path, episodes: int, video: bool) -> tuple[str, Path]:
    """The embedded default's demos with ``episodes`` episodes, as images or video (recorded once)."""
    from tmrl_vla.data.demos import DemoConfig, record_demos

    config = DemoConfig(num_episodes=episodes)
    root = out / f"demos_{'video' if video else 'image'}_{episodes}"
    if not (root / "meta" / "info.json").exists():
        record_demos(config, root, video=video)
    return config.repo_id, root


def run_one(
    base: Path, repo_id: str, root: Path, loader: str, steps: int, workers: int, threads: int, out: Path
) -> dict:
    """One training process: wall seconds, its loop seconds, and the peak PSS of it and its workers."""
    args = [sys.executable, "-c", CHILD, str(base), repo_id, str(root), str(out), loader, str(steps), str(workers)]
    args.append(str(threads))
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak, watched = 0, psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [watched, *watched.children(recursive=True)]
            peak = max(peak, sum(p.memory_full_info().pss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    wall = time.perf_counter() - start
    stdout = proc.stdout.read()
    if proc.returncode != 0:
        raise RuntimeError(f"training process failed ({loader}, {root})")
    loop = json.loads(stdout.strip().splitlines()[-1])["loop_seconds"]
    return {"wall_s": wall, "loop_s": loop, "steps_per_s": steps / loop, "peak_pss_mb": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--small", type=int, default=50, help="the smaller dataset's episodes")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the streamed runs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of training (0: torch's default)")
    parser.add_argument("--base", type=Path, help="LeRobot policy checkpoint (default: the embedded default's)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_csp_data"))
    args = parser.parse_args()

    base = args.base
    if base is None:
        from tmrl_vla.assets import AssetsConfig, build_default_assets
        from tmrl_vla.cache import AssetCache

        base = build_default_assets(AssetsConfig(), AssetCache()).policy_dir
    n, small, w = args.episodes, args.small, args.workers
    image, video = record(args.out, n, video=False), record(args.out, n, video=True)
    small_image, small_video = record(args.out, small, video=False), record(args.out, small, video=True)
    configs = {  # name: (loader, workers, repo_id, root)
        f"memory/image/{n}": ("memory", 0, *image),
        f"stream-w0/image/{n}": ("stream", 0, *image),
        f"stream-w{w}/image/{n}": ("stream", w, *image),
        f"stream-w0/video/{n}": ("stream", 0, *video),
        f"stream-w{w}/video/{n}": ("stream", w, *video),
        f"memory/image/{small}": ("memory", 0, *small_image),
        f"stream-w{w}/video/{small}": ("stream", w, *small_video),
    }
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    for r in range(args.repeats):
        for name, (loader, workers, repo_id, root) in configs.items():
            out = args.out / "runs" / f"{name.replace('/', '_')}_{r}"
            runs[name].append(run_one(base, repo_id, root, loader, args.steps, workers, args.threads, out))
            print(name, {k: round(v, 2) for k, v in runs[name][-1].items()}, flush=True)
    summary = {
        name: {key: round(statistics.median(run[key] for run in rs), 2) for key in rs[0]} for name, rs in runs.items()
    }
    summary["settings"] = {"steps": args.steps, "batch_size": 32, "repeats": args.repeats, "threads": args.threads}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
