"""GPU figures (issue 7): plain Keras `fit`, dlrun and a raw JAX loop, measured side by side in one process.

For the seeds' MLP at batch 128 and the fashion CNN at batch 128 (float32) and 512 (mixed_bfloat16): the
median steady-state epoch time (epochs after the first), samples per second and, with `--data`, test
accuracy. The raw loop is the framework-free reference: the same Keras layers called statelessly inside one
`jax.jit` step, the data resident on the device, batches gathered there.

    KERAS_BACKEND=jax python benchmarks/bench_gpu.py --data path/to/mnist.npz    # or fashion_mnist.npz

Without `--data` it times MNIST-shaped random data (accuracy then means nothing). Runs without TensorFlow
(the device machine has none): dlrun's TensorBoard logs are off here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.bench_training import CNN, MLP
from benchmarks.bench_training import hand_model as keras_model

CONFIGS = [("mlp", 128, "float32"), ("cnn", 128, "float32"), ("cnn", 512, "mixed_bfloat16")]


def shaped(kind: str, x: np.ndarray) -> np.ndarray:
    return (x.reshape(-1, 784) if kind == "mlp" else x.reshape(-1, 28, 28, 1)).astype("float32") / 255


def plain_keras(kind, batch, x, y, xt, yt, epochs, log: Path) -> tuple[list[float], float]:
    """model.fit on NumPy arrays with Keras' defaults."""
    import keras

    from benchmarks.epoch_timer import EpochTimer, epoch_seconds

    keras.utils.set_random_seed(0)
    model = keras_model(kind)
    model.compile(optimizer="rmsprop" if kind == "mlp" else "nadam", loss="categorical_crossentropy",
                  metrics=["accuracy"])  # fmt: skip
    onehot = keras.utils.to_categorical
    model.fit(
        shaped(kind, x), onehot(y, 10), epochs=epochs, batch_size=batch, verbose=0, callbacks=[EpochTimer(str(log))]
    )
    accuracy = model.evaluate(shaped(kind, xt), onehot(yt, 10), batch_size=1024, verbose=0)[1]
    return epoch_seconds(log), float(accuracy)


def with_dlrun(kind, batch, precision, data: Path, epochs, folder: Path, log: Path) -> tuple[list[float], float]:
    """The recipe through dlrun.train with its defaults (steps_per_execution and data_on_device auto)."""
    from benchmarks.epoch_timer import epoch_seconds
    from dlrun import api

    text = (MLP if kind == "mlp" else CNN).format(data=data, epochs=epochs, log=log)
    text = text.replace("batch_size: 128", f"batch_size: {batch}\n  precision: {precision}\n  tensorboard: false")
    text = text.replace("eval: {split: train}", "eval: {split: test, batch_size: 1024}")
    recipe = folder / f"{kind}-{batch}.yaml"
    recipe.write_text(text)
    result = api.train(api.load_recipe(recipe), runs_root=folder / "runs", quiet=True, trust=True)
    return epoch_seconds(log), float(result.metrics.get("accuracy", float("nan")))


def raw_jax(kind, batch, x, y, xt, yt, epochs) -> tuple[list[float], float]:
    """A jitted train step over Keras' stateless API, data on the device, per-epoch device permutation."""
    import jax
    import jax.numpy as jnp
    import keras

    keras.utils.set_random_seed(0)
    model = keras_model(kind)
    optimizer = keras.optimizers.get("rmsprop" if kind == "mlp" else "nadam")
    optimizer.build(model.trainable_variables)
    loss = keras.losses.CategoricalCrossentropy()
    xd, yd = jax.device_put(shaped(kind, x)), jax.device_put(jax.nn.one_hot(y, 10))

    def loss_of(trainable, non_trainable, xb, yb):
        pred, non_trainable = model.stateless_call(trainable, non_trainable, xb, training=True)
        return loss(yb, pred), non_trainable

    @jax.jit
    def step(state, index):
        trainable, non_trainable, opt = state
        (_, non_trainable), grads = jax.value_and_grad(loss_of, has_aux=True)(
            trainable, non_trainable, xd[index], yd[index]
        )
        trainable, opt = optimizer.stateless_apply(opt, grads, trainable)
        return trainable, non_trainable, opt

    state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables])  # fmt: skip
    key = jax.random.PRNGKey(0)
    n, times = len(x), []
    for _ in range(epochs):
        start = time.perf_counter()
        key, sub = jax.random.split(key)
        order = jax.random.permutation(sub, n)
        for i in range(0, n, batch):
            state = step(state, order[i : i + batch])
        jax.block_until_ready(state)
        times.append(time.perf_counter() - start)
    trainable, non_trainable, _ = state
    for v, value in zip(model.trainable_variables, trainable, strict=True):
        v.assign(value)
    for v, value in zip(model.non_trainable_variables, non_trainable, strict=True):
        v.assign(value)
    pred = model.predict(shaped(kind, xt), batch_size=1024, verbose=0)
    return times, float(jnp.mean(jnp.argmax(pred, -1) == yt))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="an npz in keras.datasets layout (mnist or fashion_mnist)")
    parser.add_argument("--samples", type=int, default=60000, help="training samples (random data, or a slice)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--only", help="comma-separated config indexes (0 mlp-128, 1 cnn-128, 2 cnn-512-bf16)")
    args = parser.parse_args()
    import keras

    rng = np.random.default_rng(0)
    if args.data:
        with np.load(args.data) as d:
            x, y, xt, yt = d["x_train"][: args.samples], d["y_train"][: args.samples], d["x_test"], d["y_test"]
    else:
        x = rng.integers(0, 256, size=(args.samples, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=args.samples).astype(np.uint8)
        xt, yt = x[:2000], y[:2000]
    import jax

    print(f"device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform}); keras {keras.__version__}, "
          f"jax {jax.__version__}; {len(x)} training samples, {args.epochs} epochs each", flush=True)  # fmt: skip
    chosen = [CONFIGS[int(i)] for i in args.only.split(",")] if args.only else CONFIGS
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = folder / "data.npz"
        np.savez(data, x_train=x, y_train=y, x_test=xt, y_test=yt)
        for kind, batch, precision in chosen:
            keras.mixed_precision.set_global_policy(precision)
            sides = {
                "plain Keras fit": plain_keras(kind, batch, x, y, xt, yt, args.epochs, folder / "plain.json"),
                "dlrun": with_dlrun(kind, batch, precision, data, args.epochs, folder, folder / "dlrun.json"),
                "raw JAX loop": raw_jax(kind, batch, x, y, xt, yt, args.epochs),
            }
            keras.mixed_precision.set_global_policy("float32")
            for side, (times, accuracy) in sides.items():
                epoch = statistics.median(times[1:])
                rows.append(f"| {kind} | {batch} | {precision} | {side} | {epoch:.3f} | {len(x) / epoch:,.0f} | "
                            f"{accuracy:.4f} |")  # fmt: skip
                print(rows[-1], flush=True)
    print("\n| model | batch | precision | side | s/epoch (median, after the first) | samples/s | test accuracy |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
