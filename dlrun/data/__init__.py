"""Data: sources -> tables -> splits -> named inputs/targets -> arrays or tf.data -> the model.

- `sources`: keras.datasets names, .npz/.npy, CSV, Parquet, JSON lines, image/text folders (or their
  archives), scikit-learn's bundled sets; paths relative to the recipe, then $DLRUN_DATA_DIR.
- `tables`: rows in memory (NumPy) or streamed from disk (tf.data), subset by row indices.
- `splits`: `train[:10%]` slices, seeded (stratified) hold-outs, k folds.
- `prepare`: columns -> named inputs and targets, label vocabularies, class/sample weights, `Prepared.feed`.
- `preprocess`: `preprocess:` Keras layers adapted on the training split and saved inside the model.
- `cv`: `dlrun cv RECIPE --folds K`.
"""
