"""Training engine: the loop, its callbacks, schedules, checkpoints, the time budget and
the weight average. Training only: what inference shares with it lives in ``runtime/``."""
