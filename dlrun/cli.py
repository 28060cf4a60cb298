"""The `dlrun` command line: parse arguments, call the API, render. No logic of its own."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

# The CLI uses no pydantic plugins; looking them up scans every installed package's entry points (~0.1 s).
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from dlrun import api, quiet_tensorflow
from dlrun.console import console, err_console
from dlrun.engine import display
from dlrun.errors import (
    EXIT_INTERNAL,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_USER,
    RecipeError,
    RunInterrupted,
    framework_error,
)

app = typer.Typer(
    name="dlrun",
    help="Keras, declared: validate, build, train and evaluate Keras models from one YAML recipe.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    rich_markup_mode=None,
)

RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file.", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a recipe value: KEY.PATH=VALUE (repeatable).", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or status lines.")]
TrustOpt = Annotated[
    bool, typer.Option("--trust", help="Import custom code a run folder names, or from outside the recipe's folder.")
]


def _choices(values: Any) -> Any:
    """Shell completion offering `values` (a sequence, or a function returning one) for an option."""

    def complete(incomplete: str) -> list[str]:
        return [v for v in (values() if callable(values) else values) if v.startswith(incomplete)]

    return complete


def _template_names() -> list[str]:
    from dlrun.starter import template_names

    return template_names()


def _emit(data: Any) -> None:
    console.print_json(json.dumps(data, default=str), highlight=False)  # machine output: never coloured


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"dlrun {version('dlrun')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Keras, declared."""


@app.command()
def validate(
    recipe: Annotated[Path | None, typer.Argument(help="Recipe YAML file.", show_default=False)] = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    strict: Annotated[bool, typer.Option("--strict", help="Lint warnings are errors (exit 2).")] = False,
    explain: Annotated[
        str | None, typer.Option("--explain", help="Explain a lint rule (e.g. unknown-monitor) and exit.")
    ] = None,
) -> None:
    """Check a recipe's schema, graph and values without importing TensorFlow; report every error, then lint."""
    from dlrun.validation import print_report

    raise typer.Exit(print_report(recipe, set_ or (), json_out=json_out, strict=strict, explain=explain))


@app.command()
def show(
    recipe: RecipeArg,
    set_: SetOpt = None,
    defaults: Annotated[
        bool, typer.Option("--defaults", help="Also print every default the recipe does not set.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Print the resolved recipe (after extends, overrides and interpolation)."""
    from dlrun.recipe.compose import dump_yaml
    from dlrun.recipe.defaults import with_defaults

    loaded = api.load_recipe(recipe, overrides=set_ or ())
    document = with_defaults(loaded) if defaults else loaded.resolved()
    if json_out:
        _emit(document)
    else:
        console.print(dump_yaml(document), end="", markup=False)


@app.command()
def summary(
    recipe: RecipeArg,
    set_: SetOpt = None,
    expand: Annotated[bool, typer.Option("--expand", help="Show every layer inside blocks.")] = False,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="table, dot or mermaid (dot/mermaid need no TensorFlow).",
            autocompletion=_choices(("table", "dot", "mermaid")),
        ),
    ] = "table",
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Draw the model to FILE.png|svg|pdf (needs the plot extra and graphviz)."),
    ] = None,
    trust: TrustOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Build the model without training and print every layer with shapes and parameter counts."""
    from dlrun.graph import render

    if plot is not None:
        api.check_plot_tools(plot)  # at once, not after the model is built
    loaded = api.load_recipe(recipe, overrides=set_ or ())
    if fmt in ("dot", "mermaid"):
        shapes = render.known_shapes(loaded.graph, loaded.recipe.expect.output_shapes if loaded.recipe.expect else None)
        text = (render.to_dot if fmt == "dot" else render.to_mermaid)(loaded.graph, shapes)
        console.print(text, end="", markup=False)
        return
    if fmt != "table":
        raise RecipeError(f"--format must be table, dot or mermaid, not {fmt!r}")
    built = api.build(loaded, trust=trust)
    rows = render.summary_rows(loaded.graph, built, expand=expand)
    total = render.totals(built.model)
    if plot is not None:
        api.plot(built.model, plot, expand=expand)
    if json_out:
        _emit(render.rows_as_json(rows, total, loaded.graph))
    else:
        console.print(render.render_table(rows, total, loaded.graph))


@app.command()
def check(recipe: RecipeArg, set_: SetOpt = None, trust: TrustOpt = False, json_out: JsonOpt = False) -> None:
    """Build the model and run one forward and backward step on random data (no dataset needed)."""
    result = api.check(api.load_recipe(recipe, overrides=set_ or ()), trust=trust)
    if json_out:
        _emit(result)
    else:
        shapes = ", ".join(f"{k} {v}" for k, v in result["output_shapes"].items())
        console.print(f"{recipe}: trainable · {result['params']:,} params · loss {result['loss']:.4f} · {shapes}")


@app.command()
def train(
    recipe: Annotated[Path | None, typer.Argument(help="Recipe YAML file.", show_default=False)] = None,
    set_: SetOpt = None,
    runs: Annotated[Path, typer.Option("--runs", help="Folder that holds run folders.")] = Path("runs"),
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue the interrupted run in this folder; 'auto': the latest resumable run of RECIPE.",
            show_default=False,
        ),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id",
            help="Run folder runs/<name>/ID: started again, continues it from its last state (exit 0 if finished).",
            show_default=False,
        ),
    ] = None,
    trust: TrustOpt = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Train a recipe; writes runs/<name>/<timestamp>/ and evaluates on the recipe's eval split."""
    from dlrun.engine.display import status

    status("reading the recipe", quiet=quiet or json_out)  # within a second: TensorFlow takes several to load
    loaded = api.load_recipe(api.recipe_to_train(recipe, resume=resume, overrides=set_ or ()), overrides=set_ or ())
    try:
        result = api.train(
            loaded,
            runs_root=runs,
            trust=trust,
            quiet=quiet or json_out,
            overrides=tuple(set_ or ()),
            resume=resume,
            run_id=run_id,
        )
    except RunInterrupted as exc:
        exc.resume_hint = _resume_hint(exc.run, trust=trust, recipe=recipe, run_id=run_id)  # type: ignore[attr-defined]
        raise
    run_folder = str(result.run.path) if result.run.path.exists() else None  # None: a worker other than the chief
    if json_out:
        _emit({"run": run_folder, "metrics": result.metrics})
        return
    _metrics_table(f"{loaded.recipe.name}: {loaded.recipe.eval.split}", result.metrics, loaded.graph.outputs)
    console.print(f"run: {run_folder or 'written by the chief worker'}")


@app.command("eval")
def eval_(
    run: Annotated[Path, typer.Argument(help="Run folder (runs/<name>/<timestamp>).", show_default=False)],
    split: Annotated[str | None, typer.Option("--split", help="test, validation or train.")] = None,
    trust: TrustOpt = False,
    unsafe: Annotated[
        bool, typer.Option("--unsafe", help="Load models with Lambda code (trusted files only).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate a run's model on its recipe's test split; prints metrics per output."""
    result = api.evaluate(run, split=split, trust=trust, unsafe=unsafe)
    if json_out:
        _emit(result)
    else:
        _metrics_table(f"{run}: {result['split']} ({result['samples']} samples)", result["metrics"], result["outputs"])
        _report_tables(result.get("reports", {}))
        for name in result.get("plots", []):
            console.print(f"plot: {run / name}", markup=False)


@app.command()
def plot(
    runs: Annotated[list[Path], typer.Argument(help="One or more run folders.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The picture: FILE.png or FILE.svg.")] = Path("curves.png"),
    metric: Annotated[
        str | None, typer.Option("--metric", help="Draw only this metric (and its val_ twin), e.g. loss.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Draw the runs' learning curves in one picture, overlaid to compare them (training solid, validation dashed)."""
    result = api.plot_runs(runs, out, metric=metric)
    if json_out:
        _emit(result)
    else:
        console.print(
            f"{result['output']}: {', '.join(result['metrics'])} of {len(result['runs'])} run(s)", markup=False
        )


@app.command()
def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the JSON Schema of the recipe format (for editors)."""
    text = api.json_schema_text()
    if output is None:
        console.print(text, end="", markup=False)
    else:
        from dlrun.engine.rundir import atomic_write_text

        atomic_write_text(output, text)


@app.command()
def init(
    template: Annotated[
        str,
        typer.Option(
            "--template",
            "-t",
            help="mlp, cnn, multi-input, multi-output, transfer, text, or a gallery recipe (`dlrun recipes`).",
            autocompletion=_choices(_template_names),
        ),
    ] = "mlp",
    output: Annotated[
        Path, typer.Option("--output", "-o", help="File to write (never overwritten); '-' for stdout.")
    ] = Path("recipe.yaml"),
    name: Annotated[str | None, typer.Option("--name", help="The recipe's `name:` (default: the template's).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Write a commented starter recipe that passes `dlrun check` as written, or copy a gallery recipe."""
    from dlrun import starter

    if str(output) == "-":
        console.print(starter.render(template, recipe_name=name), end="", markup=False)
        return
    written = starter.write(template, output, recipe_name=name)
    if not quiet:
        err_console.print(f"wrote {written} (template {template}); next: dlrun check {written}", markup=False)


@app.command("import")
def import_(
    model: Annotated[Path, typer.Argument(help="A saved Keras model (.keras): functional or Sequential.")],
    name: Annotated[str | None, typer.Option("--name", help="The recipe's name (default: the model's).")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the recipe to this new file instead of stdout.")
    ] = None,
    imports: Annotated[
        list[str] | None,
        typer.Option(
            "--imports",
            help="A module or .py file defining registered custom classes the model uses (repeatable); "
            "imported (its code runs) and listed under `imports:`.",
        ),
    ] = None,
    fold: Annotated[
        bool, typer.Option("--fold/--no-fold", help="Fold repeated structure into `blocks:` with `repeat:`.")
    ] = True,
    json_out: JsonOpt = False,
) -> None:
    """Turn a saved Keras model into a recipe (loaded with safe_mode: no Lambda code runs)."""
    document, text = api.import_model(model, name=name, fold=fold, imports=imports or ())
    if json_out:
        _emit(document)
    elif output is None:
        console.print(text, end="", markup=False, emoji=False)
    else:
        from dlrun.starter import write_new

        written = write_new(output, text)
        err_console.print(f"wrote {written} (recipe {document.get('name')}); next: dlrun check {written}", markup=False)


@app.command()
def eject(
    recipe: RecipeArg,
    set_: SetOpt = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the code to this new file instead of stdout.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Write plain Keras Python (functional API) that builds the recipe's model."""
    code = api.eject(api.load_recipe(recipe, overrides=set_ or ()))
    if json_out:
        _emit({"recipe": str(recipe), "code": code})
    elif output is None:
        console.print(code, end="", markup=False, emoji=False)
    else:
        from dlrun.starter import write_new

        write_new(output, code)


@app.command("export")
def export_(
    run: Annotated[Path, typer.Argument(help="Run folder.", show_default=False)],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="keras, savedmodel, tflite or onnx.",
            autocompletion=_choices(("keras", "savedmodel", "tflite", "onnx")),
        ),
    ] = "keras",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Target (default: RUN/export/model.*).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing export.")] = False,
    trust: TrustOpt = False,
    unsafe: Annotated[
        bool, typer.Option("--unsafe", help="Load models with Lambda code (trusted files only).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Export a run's model and verify it by loading it back and comparing outputs on a sample batch."""
    result = api.export(run, fmt, output=output, overwrite=overwrite, trust=trust, unsafe=unsafe)
    if json_out:
        _emit(result)
    else:
        console.print(f"{result['path']}: verified ({fmt}, max difference {result['max_abs_difference']:.2g})")


@app.command("runs")
def runs_(
    root: Annotated[Path, typer.Argument(help="Folder holding run folders.")] = Path("runs"),
    json_out: JsonOpt = False,
) -> None:
    """List runs with their status and key metrics, newest first."""
    from dlrun.verbs.runs import list_runs

    rows = list_runs(root)
    if json_out:
        _emit(rows)
        return
    from rich.table import Table

    table = Table(title=f"runs in {root}", title_justify="left")
    for header in ("name", "started", "status", "epochs", "metrics", "folder"):
        table.add_column(header)
    for r in rows:
        shown = " · ".join(f"{k} {v:.4f}" for k, v in list(r["metrics"].items())[:4])
        status = f"{r['status']}: {r['reason']}" if r.get("reason") else r["status"]
        table.add_row(r["name"], r["started"], status, str(r["epochs"]), shown, r["run"])
    console.print(table)


@app.command("recipes")
def recipes_(json_out: JsonOpt = False) -> None:
    """List the gallery's recipes and what each shows; copy one with `dlrun init --template NAME`."""
    from dlrun import gallery

    found = gallery.all_recipes()
    if json_out:
        _emit([{"name": r.name, "shows": r.header, "imports": r.local_imports()} for r in found])
        return
    from rich.table import Table

    table = Table(title="the recipe gallery", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("what it shows")
    for r in found:
        table.add_row(r.name, r.summary)
    console.print(table)
    console.print("copy one: dlrun init --template NAME -o NAME.yaml", markup=False)


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Two or more run folders.", show_default=False)],
    json_out: JsonOpt = False,
) -> None:
    """Show how the runs' recipes differ and their metrics side by side."""
    from dlrun.verbs.runs import compare_runs

    result = compare_runs(runs)
    if json_out:
        _emit(result)
        return
    from rich.table import Table

    table = Table(title="differences", title_justify="left")
    table.add_column("key")
    for i, _ in enumerate(result["runs"]):
        table.add_column(f"run {i + 1}")
    for key, values in result["differences"].items():
        table.add_row(key, *[str(v) for v in values])
    for key, values in result["metrics"].items():
        table.add_row(f"[bold]{key}[/bold]", *["" if v is None else f"{v:.4f}" for v in values])
    console.print(table)
    for i, path in enumerate(result["runs"]):
        console.print(f"run {i + 1}: {path}")


@app.command()
def tune(
    recipe: RecipeArg,
    set_: SetOpt = None,
    trials: Annotated[
        int | None,
        typer.Option("--trials", "-n", help="Trials the study should hold in total (default: search.trials)."),
    ] = None,
    study_dir: Annotated[
        Path | None,
        typer.Option("--study-dir", help="Study folder (default: studies/<name>); an existing one is resumed."),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Start no new trial after this many seconds.")
    ] = None,
    check_only: Annotated[
        bool, typer.Option("--check", help="Only check the search section (paths and values); train nothing.")
    ] = False,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="Shared study storage: a journal file, sqlite:///FILE or postgresql://... (default: "
            "<study-dir>/study.journal). Several workers may use one.",
        ),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Local worker processes on the study.")] = 1,
    trust: TrustOpt = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Search the recipe's `search:` space with Optuna; each trial is a run under <study-dir>/trials/."""
    if check_only:
        from dlrun.verbs.tune.study import load_space

        _, space = load_space(recipe, tuple(set_ or ()))
        info = {"recipe": str(recipe), "valid": True, "parameters": [p.key for p in space.params]}
        if json_out:
            _emit(info)
        else:
            console.print(f"{recipe}: search ok ({len(space.params)} parameters: {', '.join(info['parameters'])})")
        return
    from dlrun.verbs.tune.leaderboard import render_leaderboard

    result = api.tune(
        recipe,
        overrides=set_ or (),
        trials=trials,
        study_dir=study_dir,
        timeout=timeout,
        trust=trust,
        quiet=quiet or json_out,
        storage=storage,
        workers=workers,
    )
    if json_out:
        _emit(
            {
                "study": str(result.study_dir),
                "metric": result.metric,
                "goal": result.goal,
                "objectives": [{"metric": m, "goal": g} for m, g in result.objectives],
                "pareto": result.pareto,
                "ran": result.ran,
                "best": result.best,
                "best_recipe": None if result.best_recipe is None else str(result.best_recipe),
                "trials": result.rows,
            }
        )
        return
    console.print(render_leaderboard(result))
    console.print(f"leaderboard: {result.study_dir / 'leaderboard.csv'}")
    if result.best_recipe is not None:
        console.print(f"best: trial {result.best['trial']} -> {result.best_recipe}")


@app.command()
def ensemble(
    runs: Annotated[
        list[Path],
        typer.Argument(help="Two or more run folders, or one recipe with an `ensemble:` section.", show_default=False),
    ],
    weights: Annotated[
        str | None, typer.Option("--weights", help="One weight per run, e.g. 2,1,1 (default: equal).")
    ] = None,
    method: Annotated[
        str | None, typer.Option("--method", help="mean (of predictions) or vote (majority class); default mean.")
    ] = None,
    split: Annotated[str | None, typer.Option("--split", help="test, validation or train.")] = None,
    export: Annotated[
        Path | None, typer.Option("--export", help="Write the mean ensemble as one Keras model (FILE.keras).")
    ] = None,
    set_: SetOpt = None,
    runs_root: Annotated[Path, typer.Option("--runs", help="Recipe mode: folder for the members' runs.")] = Path(
        "runs"
    ),
    trust: TrustOpt = False,
    unsafe: Annotated[
        bool, typer.Option("--unsafe", help="Load models with Lambda code (trusted files only).")
    ] = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Score the ensemble of several runs beside each member on the test split; optionally export it.

    Given one recipe instead, train the members its `ensemble:` section declares first.
    """
    result = api.ensemble(
        runs,
        weights=weights,
        method=method,
        split=split,
        export=export,
        overrides=set_ or (),
        runs_root=runs_root,
        trust=trust,
        unsafe=unsafe,
        quiet=quiet or json_out,
    )
    if json_out:
        _emit(result)
        return
    from dlrun.verbs.ensemble import render_table

    console.print(render_table(result))
    if result["export"]:
        console.print(f"exported: {result['export']}")


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="Run folder.", show_default=False)],
    input_: Annotated[
        Path,
        typer.Option(
            "--input", "-i", help="Raw data: .npz, .npy, .csv, .jsonl, .parquet, an image or a folder of images."
        ),
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="OUT.csv or OUT.json (default: RUN/predictions/<input>.csv).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Default: the recipe's.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = False,
    trust: TrustOpt = False,
    unsafe: Annotated[
        bool, typer.Option("--unsafe", help="Load models with Lambda code (trusted files only).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Predict with a run's model on raw data (the recipe's steps applied); class names where the data has them."""
    result = api.predict(
        run, input_, output=output, batch_size=batch_size, overwrite=overwrite, trust=trust, unsafe=unsafe
    )
    if json_out:
        _emit(result)
    else:
        console.print(f"{result['output']}: {result['count']} predictions", markup=False)


@app.command()
def serve(
    run: Annotated[Path, typer.Argument(help="Run folder.", show_default=False)],
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; anything but 127.0.0.1 exposes an API with no auth.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    max_batch: Annotated[
        int | None, typer.Option("--max-batch", help="Most rows per model call, gathered from concurrent requests.")
    ] = None,
    max_wait_ms: Annotated[
        float | None, typer.Option("--max-wait-ms", help="How long a batch waits for more requests (default 5).")
    ] = None,
    trust: TrustOpt = False,
    unsafe: Annotated[
        bool, typer.Option("--unsafe", help="Load models with Lambda code (trusted files only).")
    ] = False,
) -> None:
    """Serve a run's model over HTTP: POST /predict with raw rows (the recipe's input names), /health, /docs."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"warning: binding {host}: anyone who can reach it can use this API (no authentication)")
    console.print(f"loading {run} ...", markup=False)
    api.serve(run, host=host, port=port, trust=trust, unsafe=unsafe, max_batch=max_batch, max_wait_ms=max_wait_ms)


def _resume_hint(run: Path | None, *, trust: bool, recipe: Path | None = None, run_id: str | None = None) -> str | None:
    """The command that continues an interrupted run, or why there is none (a run named by --run-id: the same
    command again, which every process of a multi-process run can be given)."""
    import shlex

    from dlrun.engine.rundir import RunDir
    from dlrun.verbs.runs import status

    if run is None:
        return None
    if status(RunDir(run)) != "interrupted":
        return f"nothing to resume: {run} stopped before its first epoch ended"
    again = (
        f"dlrun train {shlex.quote(str(recipe))} --run-id {shlex.quote(run_id)}"
        if run_id is not None and recipe is not None
        else f"dlrun train --resume {shlex.quote(str(run))}"
    )
    return f"resume with: {again}" + (" --trust" if trust else "")


def _report_tables(reports: dict[str, Any]) -> None:
    from rich.table import Table

    for output, rep in reports.items():
        if rep.get("kind") == "regression":
            units = f" ({rep['units']})" if rep.get("units") else ""
            console.print(f"{output}: MAE {rep['mae']:.4f} · RMSE {rep['rmse']:.4f} · R² {rep['r2']:.4f}{units}")
            continue
        table = Table(title=f"{output}: accuracy {rep['accuracy']:.4f}", title_justify="left")
        for header in ("class", "precision", "recall", "f1", "support"):
            table.add_column(header, justify="left" if header == "class" else "right")
        for name, c in rep["classes"].items():
            table.add_row(name, f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}", str(c["support"]))
        m = rep["macro"]
        table.add_row("macro avg", f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", "")
        console.print(table)
        if rep.get("absent"):
            console.print(f"macro avg over the classes present; absent from this split: {', '.join(rep['absent'])}")


def _metrics_table(title: str, metrics: dict[str, float], outputs: list[str]) -> None:
    from rich.table import Table

    from dlrun.verbs.report import metrics_by_output

    table = Table(title=title, title_justify="left")
    table.add_column("output")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for output, metric, value in metrics_by_output(metrics, outputs):
        table.add_row(output, metric, f"{value:.4f}")
    console.print(table)


def _click_exception_types() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """Usage-error, exit and abort exception classes of typer's bundled click (and click, if present)."""
    usage: list[type] = []
    exits: list[type] = [typer.Exit]
    aborts: list[type] = [typer.Abort]
    try:
        from typer._click import exceptions as bundled

        usage.append(bundled.ClickException)
    except ImportError:
        pass
    try:
        import click

        usage.append(click.ClickException)
        exits.append(click.exceptions.Exit)
        aborts.append(click.exceptions.Abort)
    except ImportError:
        pass
    return tuple(usage), tuple(exits), tuple(aborts)


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app, maps errors to one line and an exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    quiet_tensorflow.before_load(display.loading_tensorflow)  # every verb's first status, before TensorFlow
    usage_errors, exits, aborts = _click_exception_types()
    try:
        app(args=argv, standalone_mode=False, prog_name="dlrun")
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)  # plain: the one line must never wrap or carry markup
        return EXIT_USER
    except RunInterrupted as exc:
        err_console.print(f"interrupted (signal {exc.signum}); the run folder holds the state saved so far")
        if (hint := getattr(exc, "resume_hint", None)) is not None:
            err_console.print(hint, markup=False)
        return EXIT_SIGINT if exc.signum == 2 else EXIT_SIGTERM
    except aborts:
        err_console.print("aborted")
        return EXIT_SIGINT
    except exits as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except usage_errors as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            err_console.print(exc.format_message(), markup=False)  # the help text, asked for by giving nothing
            return EXIT_USER
        err_console.print(f"error: {exc.format_message()}", markup=False)
        return EXIT_USER
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return EXIT_SIGINT
    except Exception as exc:
        if (user := framework_error(exc)) is not None:  # caused by the recipe, the data or the disk
            log = getattr(exc, "dlrun_log", None)
            if log is not None:  # a run folder's error.log: `dlrun runs` shows this line as the reason
                with contextlib.suppress(OSError), open(log, "a", encoding="utf-8") as fh:
                    fh.write(f"error: {user}\n")
            print(f"error: {user}", file=sys.stderr)
            return EXIT_USER
        log = getattr(exc, "dlrun_log", None) or api.write_crash_log(traceback.format_exc())
        err_console.print(f"internal error (a bug in dlrun; please report it with {log})", markup=False)
        return EXIT_INTERNAL
    return 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


@app.command()
def cv(
    recipe: RecipeArg,
    folds: Annotated[int, typer.Option("--folds", "-k", help="Number of folds (K).")] = 5,
    set_: SetOpt = None,
    runs: Annotated[Path, typer.Option("--runs", help="Folder that holds run folders.")] = Path("runs"),
    trust: TrustOpt = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """K-fold cross-validation: K training runs, each validated and scored on its held-out fold; mean and
    sample std (ddof=1) of every metric."""
    loaded = api.load_recipe(recipe, overrides=set_ or ())
    result = api.cross_validate(loaded, folds, runs_root=runs, trust=trust, quiet=quiet or json_out)
    if json_out:
        _emit(result)
        return
    from rich.table import Table

    table = Table(title=f"{loaded.recipe.name}: {folds}-fold cross-validation ({result['samples']} samples)")
    table.add_column("metric")
    table.add_column("mean", justify="right")
    table.add_column("std (ddof=1)", justify="right")
    table.add_column("folds", justify="right")
    for name, m in result["metrics"].items():
        table.add_row(name, f"{m['mean']:.4f}", f"{m['std']:.4f}", " ".join(f"{v:.4f}" for v in m["folds"]))
    console.print(table)
    console.print(f"report: {result['run']}/cv.json · a run folder per fold: {result['run']}/fold-<i>")
