"""Hyperparameter search declared in the recipe (`search:`, its types in `dlrun.recipe.search`), run by
`dlrun tune` with Optuna: `space` checks it (neither Optuna nor TensorFlow), `study` runs a session per trial,
`leaderboard` writes the results."""
