"""The high-level RL agent of TMRL (and of DSRL, its z-only special case): actor, critics, SAC maths, replay."""
