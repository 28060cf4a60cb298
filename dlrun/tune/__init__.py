"""Hyperparameter search declared in the recipe (`search:`), run by `dlrun tune` with Optuna.

`dlrun.tune.space` (the `search:` schema and its checks) imports neither Optuna nor TensorFlow;
`dlrun.tune.study` runs the trials.
"""
