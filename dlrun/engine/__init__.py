"""The training engine: one RunSession (session.py) that every verb runs, its callbacks, data feeding and the
run folder it writes (rundir.py, artifacts.py, outputs.py)."""
