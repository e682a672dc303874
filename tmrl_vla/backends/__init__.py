"""VLA families the CSP wrapper supports, one registry entry each (``BACKENDS``)."""

from tmrl_vla.backends import (
    pi0,  # noqa: F401  (registers "pi0")
    pi05,  # noqa: F401  (registers "pi05")
    smolvla,  # noqa: F401  (registers "smolvla")
)
from tmrl_vla.backends.base import BACKENDS, PrefixSegments, VLABackend, backend_for

__all__ = ["BACKENDS", "PrefixSegments", "VLABackend", "backend_for"]
