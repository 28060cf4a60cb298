"""Hyperparameter search declared in the recipe (`search:`, its types in `dlrun.recipe.search`), run by
`dlrun tune` with Optuna: `space` checks it (neither Optuna nor TensorFlow), `study` runs the study (samplers,
pruners, resume checks), `trial` trains one trial as an ordinary run, `workers` shares the study between
processes, `leaderboard` writes the results."""
