"""Training: run directories and the fit loop (compile, stages, callbacks, restore best)."""
