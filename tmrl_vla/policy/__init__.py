"""The ``tmrl`` LeRobot policy type: a frozen VLA (with its CSP adapter) steered by a trained agent.

A fine-tuned agent is saved as a LeRobot policy directory (``config.json`` of type ``tmrl``,
``model.safetensors``, the processors, a card), so LeRobot's own tools load it with
``--policy.path`` once the ``lerobot_policy_tmrl`` plugin distribution is installed (``install.sh``
installs it). The modules follow LeRobot's naming, which its factory relies on to find a policy
type's classes: ``configuration_tmrl``, ``modeling_tmrl``, ``processor_tmrl``.
"""
