"""The verbs: check, train's siblings cv, tune and ensemble, evaluate, predict, export, runs — thin loops over
the engine (`dlrun.engine`) and the run artifacts it writes."""
