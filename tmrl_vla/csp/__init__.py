"""Context-smoothed pre-training: config, the CSPPolicy wrapper and its trainer."""
