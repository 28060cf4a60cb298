"""The gallery recipes that show the wide graph, trained on real (or generated) data to the figures the
README gallery quotes. All slow: each trains for minutes on two CPU cores.

Measured on the 2-core dev machine (Keras 3.15.1, TensorFlow 2.21): see the README gallery table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dlrun import api

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

pytestmark = pytest.mark.slow


def _train(tmp_path: Path, name: str, overrides: list[str] = ()):  # type: ignore[assignment]
    loaded = api.load_recipe(RECIPES / f"{name}.yaml", list(overrides))
    result = api.train(loaded, runs_root=tmp_path / "runs", quiet=True)
    print(f"{name}: {result.metrics}")
    return result


def test_transformer_text_classifier_reaches_85_percent_on_imdb(shared_data, tmp_path):
    result = _train(tmp_path, "transformer_imdb")
    assert result.metrics["accuracy"] >= 0.85


def test_bilstm_on_imdb(shared_data, tmp_path):
    result = _train(tmp_path, "bilstm_imdb", ["train.epochs=1"])
    assert result.metrics["accuracy"] >= 0.8


def test_vit_on_fashion_mnist(shared_data, tmp_path):
    result = _train(tmp_path, "vit_fashion_mnist")
    assert result.metrics["accuracy"] >= 0.83


def _reversal(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    digits = rng.integers(0, 10, size=(n, 8)).astype("int32")
    reversed_ = digits[:, ::-1].copy()
    decoder_in = np.concatenate([np.full((n, 1), 10, "int32"), reversed_[:, :-1]], axis=1)
    return {"digits": digits, "decoder_in": decoder_in, "reversed": reversed_[..., None]}  # one label per step


def test_seq2seq_reverses_digit_strings_decoding_greedily(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "reverse.npz", **_reversal(20_000, rng))
    result = _train(tmp_path, "seq2seq_reverse", [f"data.path={tmp_path / 'reverse.npz'}"])
    fresh = _reversal(1000, np.random.default_rng(1))
    # Greedy decoding: the decoder reads its own previous digit, never the answer.
    decoder_in = np.full((1000, 8), 10, "int32")
    for step in range(8):
        probs = result.model.predict({"digits": fresh["digits"], "decoder_in": decoder_in}, verbose=0)
        if step < 7:
            decoder_in[:, step + 1] = probs[:, step].argmax(-1)
    answer = probs.argmax(-1)
    exact = float((answer == fresh["reversed"][..., 0]).all(axis=1).mean())
    print(f"seq2seq_reverse: exact-match {exact:.3f} on 1000 unseen strings (greedy)")
    assert exact >= 0.9


def _moving_squares(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    frames = np.zeros((n, 8, 16, 16, 1), "float32")
    direction = rng.integers(0, 2, size=n)
    for i in range(n):
        row, start = rng.integers(0, 13), rng.integers(0, 5)
        for t in range(8):
            col = start + t if direction[i] else 12 - start - t
            frames[i, t, row : row + 3, col : col + 3, 0] = 1.0
    frames += rng.normal(0, 0.1, size=frames.shape).astype("float32")
    return {"frames": frames, "direction": direction.astype("float32")}


def test_time_distributed_conv_tells_the_direction_of_motion(tmp_path):
    np.savez(tmp_path / "frames.npz", **_moving_squares(2000, np.random.default_rng(0)))
    result = _train(tmp_path, "frames_direction", [f"data.path={tmp_path / 'frames.npz'}"])
    fresh = _moving_squares(500, np.random.default_rng(1))
    predicted = result.model.predict(fresh["frames"], verbose=0)[:, 0] > 0.5
    accuracy = float((predicted == fresh["direction"].astype(bool)).mean())
    print(f"frames_direction: accuracy {accuracy:.3f} on 500 unseen clips")
    assert accuracy >= 0.95
