#!/usr/bin/env bash
# Install tmrl_vla into ./.venv on a fresh Debian/Ubuntu machine (CPU is enough).
#   1. Debian packages for headless MuJoCo rendering through EGL (Mesa's software renderer when
#      there is no GPU). Skipped when they are already present.
#   2. A Python 3.12 virtual environment with the package, its dev and franka (franky-control)
#      extras, and the LeRobot plugins in plugins/ (the `tmrl` policy type, the `so100_pick_cube` env
#      type, the `mujoco_sim` camera type, the `franka_franky` robot type and the `scripted_expert_sim`
#      teleoperator type), which every LeRobot command line (lerobot-eval, lerobot-record, ...) loads.
# Usage: bash install.sh            (then: source .venv/bin/activate)
set -euo pipefail
cd "$(dirname "$0")"

gl_packages=(libegl1 libegl-mesa0 libopengl0 libgl1 libgl1-mesa-dri libgbm1)
if command -v dpkg >/dev/null 2>&1; then
  missing=()
  for p in "${gl_packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "[install] Debian packages for headless rendering: ${missing[*]}"
    sudo_cmd=()
    [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

python=${PYTHON:-python3.12}
if ! command -v "$python" >/dev/null 2>&1; then
  echo "[install] $python not found: tmrl_vla needs Python 3.12 (LeRobot 0.6 requires it)." >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev,franka]'
.venv/bin/python -m pip install -q -e plugins/lerobot_policy_tmrl -e plugins/lerobot_env_so100_pick_cube \
  -e plugins/lerobot_camera_mujoco_sim -e plugins/lerobot_robot_franka_franky \
  -e plugins/lerobot_teleoperator_scripted_expert
echo "[install] done: $(.venv/bin/python -c 'import tmrl_vla, lerobot, torch; print(f"tmrl_vla {tmrl_vla.__version__}, lerobot {lerobot.__version__}, torch {torch.__version__}")')"
