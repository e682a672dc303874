"""Simulated robots that LeRobot's own drivers talk to as if they were hardware."""
