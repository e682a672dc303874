#!/usr/bin/env bash
# franky-sim, a simulated Franka FR3 (MuJoCo) that speaks libfranka's network protocol, in a virtual
# environment of its own. Why a separate one: the simulator only talks to the robot client over the
# network, and its unpinned dependencies (mujoco, pin) would otherwise be resolved against the
# project's own MuJoCo; kept apart, neither can move the other. The client side is the project's
# extra: pip install -e '.[franka]' (franky-control).
#
#   bash scripts/franka_sim.sh install   # create the venv ($FRANKY_SIM_VENV, default .cache/franky-sim)
#   bash scripts/franka_sim.sh start     # run it headless on 127.0.0.1 (ports 1337 and 1338); Ctrl+C stops
#   bash scripts/franka_sim.sh start --hostname 127.0.0.2   # another loopback address (one sim per address)
#   bash scripts/franka_sim.sh path      # print the franky-sim executable (tests read it from $FRANKY_SIM)
#
# Then connect with FrankaConfig(ip="127.0.0.1", realtime=False). tests/robots/test_franka.py starts
# and stops its own simulator from this venv.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${FRANKY_SIM_VENV:-.cache/franky-sim}
spec=${FRANKY_SIM_SPEC:-franky-sim==1.0.4}  # the version the tests were run against
python=${PYTHON:-python3.12}
exe="$venv/bin/franky-sim"

case "${1:-}" in
  install)
    if ! command -v "$python" >/dev/null 2>&1; then
      echo "[franka_sim] $python not found (set PYTHON to a Python >= 3.10)." >&2
      exit 1
    fi
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q "$spec"
    "$venv/bin/python" -c 'from importlib.metadata import version as v; print("[franka_sim] installed:", *(f"{p} {v(p)}" for p in ("franky-sim", "mujoco", "pin")))'
    ;;
  start)
    shift
    if [ ! -x "$exe" ]; then
      echo "[franka_sim] not installed: bash scripts/franka_sim.sh install" >&2
      exit 1
    fi
    args=("$@")
    [[ " $* " == *" --hostname"* ]] || args+=(--hostname 127.0.0.1)
    PYTHONUNBUFFERED=1 exec "$exe" --simulator mujoco "${args[@]}"
    ;;
  path)
    [ -x "$exe" ] || { echo "[franka_sim] not installed: bash scripts/franka_sim.sh install" >&2; exit 1; }
    echo "$(cd "$(dirname "$exe")" && pwd)/franky-sim"
    ;;
  *)
    echo "usage: bash scripts/franka_sim.sh install | start [franky-sim options] | path" >&2
    exit 2
    ;;
esac
