"""Headless OpenGL for MuJoCo, chosen before MuJoCo is first imported.

MuJoCo reads ``MUJOCO_GL`` once, when ``mujoco`` is imported, so this module must be imported
before it (``tmrl_vla.envs`` does so). EGL (Mesa's llvmpipe when there is no GPU) is the default
because it needs no display and was the faster of EGL and OSMesa here; a user's own ``MUJOCO_GL``
always wins. ``LP_NUM_THREADS=0`` keeps llvmpipe from spawning render threads that would fight the
simulation and the policy for a small machine's cores.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ.setdefault("LP_NUM_THREADS", "0")
