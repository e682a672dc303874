"""Model assets shipped with tmrl_vla.

The main asset is a tiny, randomly initialised SmolVLM backbone (``tiny_smolvlm/``) that lets LeRobot's real
``SmolVLAPolicy`` be built offline in a fraction of a second. Tests and CPU smoke runs use it so that they exercise
the exact SmolVLA code path (vision tower, connector, VLM layers, action expert, flow matching) without downloading
the 500M-parameter SmolVLM2 checkpoint. ``smolvlm2_500m/`` holds the same files at the real SmolVLM2-500M shape,
from which :mod:`tmrl_vla.models.real_size` builds the full SmolVLA (and pi0 / pi0.5 from LeRobot's own configs)
with random weights for the real-size benchmarks in ``eval/``.
"""
