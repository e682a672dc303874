"""Peak memory of CSP prediction, a TMRL decision and a CSP training step beside the bare policy.

    python eval/bench_memory.py [--model tiny|smolvla|pi0|pi05] [--device cpu|cuda]
        [--dtype float32|bfloat16] [--batch 1] [--threads 1] [--calls 2] [--configs bare,csp,...]

Each configuration runs in its own subprocess (this script with ``--config NAME``), so one's
allocations never inflate another's peak: build the policy and batch, prepare the configuration
(wrap, calibrate, merge, make the optimiser), then reset the peak and make ``--calls`` calls:

* ``bare``: the bare policy's ``predict_action_chunk``;
* ``csp``: CSP with its adapter merged, ``predict_action_chunk`` at sigma = 0;
* ``decision``: a TMRL decision (prefix once, high-level policy, CSP chunk; not pi0/pi0.5);
* ``csp_train``: a CSP training step (eval/bench_train_step.py's ``csp``);
* ``lerobot_train``: the same LoRA's step through LeRobot's PEFT path (its ``lerobot``).

Peak: on CPU the resident set's high-water mark (``VmHWM``; the kernel's ``ru_maxrss``), reset
before the calls by writing 5 to ``/proc/self/clear_refs``, so ``run_peak_mb`` is the peak *while
calling*, model included (``calls_extra_mb``: above the resident set before the calls), and
``process_peak_mb`` the whole process's (build included); on CUDA
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. Why RSS and not
tracemalloc: tracemalloc sees Python allocations only, not torch's tensor memory. The last line is
one JSON object: per configuration its numbers, and ``run_peak_ratio``/``run_peak_delta_mb``
against ``bare`` (the training steps also against each other: ``csp_train_vs_lerobot``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from benchlib import (
    add_model_args,
    calibrated_csp,
    csp_train_step,
    lerobot_lora,
    lerobot_train_step,
    make_setup,
    synchronize,
    tmrl_actor,
    training_sigma,
)

CONFIGS = ("bare", "csp", "decision", "csp_train", "lerobot_train")
MB = 2**20


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=2, help="calls after the peak reset")
    parser.add_argument("--configs", default=None, help=f"comma-separated subset of {','.join(CONFIGS)}")
    parser.add_argument("--config", choices=CONFIGS, default=None, help="measure this one here (the subprocess)")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------ in the subprocess
def prepare(name: str, setup) -> Callable[[], object]:
    """The call that configuration ``name`` makes, everything it needs built beforehand."""
    policy, batch, noise = setup.policy, setup.batch, setup.noise
    if name == "bare":
        return lambda: policy.predict_action_chunk(dict(batch), noise=noise)
    if name == "lerobot_train":
        from tmrl_vla.csp.config import CSPConfig

        csp_config = CSPConfig()
        peft_policy = lerobot_lora(policy, csp_config, _backend(policy)).train()
        return _with_grad(lerobot_train_step(peft_policy, batch))
    csp = calibrated_csp(policy, batch)
    if name == "csp_train":
        sigma = training_sigma(noise.shape[0], setup.device)
        return _with_grad(csp_train_step(csp.train(), batch, sigma, steps=10))
    csp.merge_adapter()
    if name == "csp":
        return lambda: csp.predict_action_chunk(dict(batch), sigma=0.0, noise=noise)
    from tmrl_vla.finetune import default_rl
    from tmrl_vla.rl.decision import decide

    preset = default_rl()
    actor = tmrl_actor(csp, preset.agent.active_heads, preset.observation.image_grid, setup.device)
    return lambda: decide(csp, actor, dict(batch), image_grid=preset.observation.image_grid)


def _backend(policy):
    from tmrl_vla.backends import backend_for

    return backend_for(policy)


def _with_grad(step: Callable[[], None]) -> Callable[[], None]:
    """``step`` run with gradients on (the calls otherwise run under ``torch.no_grad``)."""

    def run() -> None:
        with torch.enable_grad():
            step()

    return run


def _status_mb(field: str) -> float | None:
    """A ``/proc/self/status`` field (``VmRSS``, ``VmHWM``) in MiB; None where there is no procfs."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM, ru_maxrss) of this process; False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure_one(args: argparse.Namespace) -> dict:
    """Build, prepare, reset the peak, call ``args.calls`` times; the peaks in MiB."""
    torch.set_num_threads(args.threads)
    setup = make_setup(args)
    call = prepare(args.config, setup)
    build_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"config": args.config, "rss_before_calls_mb": _status_mb("VmRSS")}
    reset = _reset_peak_rss()
    if args.device == "cuda":
        synchronize("cuda")
        result["cuda_allocated_before_calls_mb"] = torch.cuda.memory_allocated() / MB
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        for _ in range(args.calls):
            call()
    synchronize(args.device)
    run_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["run_peak_mb"] = run_peak if reset else None
    if reset and result["rss_before_calls_mb"] is not None:
        result["calls_extra_mb"] = run_peak - result["rss_before_calls_mb"]  # activations, optimiser state
    result["process_peak_mb"] = max(build_peak, run_peak)
    if args.device == "cuda":
        result["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / MB
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()} | setup.describe()


# ----------------------------------------------------------------------------------------- the parent
def run_subprocess(name: str, argv: list[str]) -> dict:
    """This script with ``--config name`` in a fresh interpreter; its last-line JSON."""
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--config", name]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"config": name, "error": (done.stderr.strip().splitlines() or ["?"])[-1], "returncode": done.returncode}
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(results: dict[str, dict], key: str) -> dict:
    """Each configuration's ``key`` peak against ``bare``'s, and the two training steps' against each other."""
    peaks = {name: r.get(key) for name, r in results.items() if r.get(key) is not None}
    out = {}
    if "bare" in peaks:
        for name, peak in peaks.items():
            out[f"{name}_ratio"] = round(peak / peaks["bare"], 4)
            out[f"{name}_delta_mb"] = round(peak - peaks["bare"], 1)
    if {"csp_train", "lerobot_train"} <= set(peaks):
        out["csp_train_vs_lerobot"] = round(peaks["csp_train"] / peaks["lerobot_train"], 4)
    return out


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.config is not None:
        result = measure_one(args)
        print(json.dumps(result))
        return result
    names = args.configs.split(",") if args.configs else list(CONFIGS)
    if args.model in ("pi0", "pi05") and "decision" in names and not args.configs:
        names.remove("decision")  # no prefix_inputs for pi0/pi0.5 yet (see eval/bench_decision.py)
    forwarded = _without_option(argv, "--configs")
    results = {}
    for name in names:
        results[name] = run_subprocess(name, forwarded)
        print(f"{name:<14} {json.dumps(results[name])}", flush=True)
    key = "cuda_max_allocated_mb" if args.device == "cuda" else "run_peak_mb"
    summary = {
        "peak": key,
        "ratios": summarise(results, key),
        "configs": results,
        "calls": args.calls,
        "batch": args.batch,
        "model": args.model,
        "device": args.device,
        "dtype": args.dtype,
    }
    print(json.dumps(summary))
    return summary


def _without_option(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option`` and its value (``--opt v`` or ``--opt=v``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


if __name__ == "__main__":
    main()
