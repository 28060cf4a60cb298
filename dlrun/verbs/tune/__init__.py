"""Hyperparameter search declared in the recipe (`search:`), run by `dlrun tune` with Optuna.

`dlrun.verbs.tune.space` (the `search:` schema and its checks) imports neither Optuna nor TensorFlow;
`dlrun.verbs.tune.study` runs the trials.
"""
