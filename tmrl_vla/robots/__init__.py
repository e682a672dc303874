"""Real robots: what stands between a fine-tuning policy and the hardware."""
