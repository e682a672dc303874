"""A person's session at the simulated SO-101, as a transcript: what they see and what they type.

    python eval/so101_session.py --out eval/results/so101_session.txt

Runs ``recipes/finetune_so101.py --simulated=true`` (the person at the keyboard, a scripted-expert
teleoperator to take over with) in a pseudo-terminal, as a terminal would, and plays a person who
follows a script of keys: start each episode with Enter, press ``e`` twice (e-stop, release) and
``f`` (failure) in one, take the arm over with ``i`` and label the pick ``s`` in another, and ``q``
to stop. The transcript keeps every line the job printed (progress bars at their last state) with
the keys typed, marked ``>>>``, and the seconds since the start.
"""

from __future__ import annotations

import argparse
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = re.compile(r"episode (\d+): reset the scene, then press Enter")
# per episode: (seconds after its start, key); Enter at the prompt is implied
SCRIPT = {
    0: [],  # the policy alone, to the time-out
    1: [(1.0, "e"), (2.5, "e"), (3.5, "f")],  # e-stop, release, then the person calls it a failure
    2: [(0.8, "i"), (3.5, "s")],  # take over with the teleoperator, and label the pick a success
    3: [(0.5, "q")],  # stop after this episode
}


def run(out: Path, output_dir: Path, timeout: float) -> str:
    cmd = [
        sys.executable,
        str(ROOT / "recipes" / "finetune_so101.py"),
        "--simulated=true",
        "--teleop.type=scripted_expert_sim",
        "--rl.total_decisions=400",
        f"--output_dir={output_dir}",
    ]
    master, slave = pty.openpty()
    env = {**os.environ, "MUJOCO_GL": "egl", "HF_HUB_OFFLINE": "1", "COLUMNS": "110"}
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, close_fds=True)
    os.close(slave)
    start = time.monotonic()
    lines: list[str] = [f"$ python recipes/finetune_so101.py {' '.join(cmd[2:-1])} --output_dir=OUT"]
    buffer, pending, episode_start = "", [], None
    while proc.poll() is None and time.monotonic() - start < timeout:
        ready, _, _ = select.select([master], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(master, 4096).decode(errors="replace")
            except OSError:
                break
            buffer += chunk
            *complete, buffer = re.split(r"\n", buffer)
            for line in complete:
                line = line.rstrip("\r").split("\r")[-1].rstrip()  # a progress bar at its last state
                if line and "torchcodec" not in line and not line.startswith((" ", "Traceback")):
                    lines.append(f"[{time.monotonic() - start:6.1f}s] {line}")
                match = PROMPT.search(line)
                if match:
                    episode = int(match.group(1))
                    time.sleep(1.0)  # the person puts the cube back
                    os.write(master, b"\n")
                    lines.append(f"[{time.monotonic() - start:6.1f}s] >>> Enter")
                    episode_start = time.monotonic()
                    pending = list(SCRIPT.get(episode, []))
        if episode_start is not None and pending and time.monotonic() - episode_start >= pending[0][0]:
            _, key = pending.pop(0)
            os.write(master, key.encode())
            lines.append(f"[{time.monotonic() - start:6.1f}s] >>> {key}")
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    os.close(master)
    lines.append(f"(exit status {proc.returncode})")
    text = "\n".join(lines) + "\n"
    text = text.replace(str(output_dir), "OUT").replace(str(ROOT) + "/", "").replace(str(Path.home()), "~")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/so101_session.txt")
    parser.add_argument("--output-dir", default="outputs/so101_session")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    print(run(Path(args.out), Path(args.output_dir).resolve(), args.timeout))


if __name__ == "__main__":
    main()
