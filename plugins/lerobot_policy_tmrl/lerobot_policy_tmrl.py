"""LeRobot plugin entry point: importing it registers the ``tmrl`` policy type with LeRobot.

LeRobot imports this module by its distribution name (``register_third_party_plugins``); the
policy's config, model and processors live in :mod:`tmrl_vla.policy`.
"""

from tmrl_vla.policy.configuration_tmrl import TMRLAgentConfig
from tmrl_vla.policy.modeling_tmrl import TMRLAgentPolicy
from tmrl_vla.policy.processor_tmrl import PackagedTokenizerStep

__all__ = ["PackagedTokenizerStep", "TMRLAgentConfig", "TMRLAgentPolicy"]
