"""Training engine: loop, evaluation, schedules, checkpoints, execution plan."""
