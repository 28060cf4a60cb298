"""Hand-written Keras for every zoo recipe: what the recipes in recipes/ must build, layer for layer.

Each builder is plain Keras code as the books write it (Sequential where the book uses Sequential,
the functional API elsewhere); tests/test_zoo.py compares the recipe's model against it. Layer
names follow the recipes only to make failures readable: the comparison ignores names.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import keras
from keras import layers

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _functional(model: keras.Model) -> keras.Model:
    """A one-input Sequential model as the functional graph it wraps (same layer objects and weights)."""
    return keras.Model(model.inputs[0], model.outputs[0], name=model.name)


def mnist_cnn() -> keras.Model:
    """Chollet, DLwP 5.1."""
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(32, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ]
    )
    return _functional(model)


def fashion_mnist_cnn() -> keras.Model:
    """Géron, HOML CNN chapter (the partial(Conv2D, ...) idiom)."""
    default_conv2d = partial(layers.Conv2D, kernel_size=3, activation="relu", padding="same")
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            default_conv2d(filters=64, kernel_size=7),
            layers.MaxPooling2D(pool_size=2),
            default_conv2d(filters=128),
            default_conv2d(filters=128),
            layers.MaxPooling2D(pool_size=2),
            default_conv2d(filters=256),
            default_conv2d(filters=256),
            layers.MaxPooling2D(pool_size=2),
            layers.Flatten(),
            layers.Dense(units=128, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(units=64, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(units=10, activation="softmax"),
        ]
    )
    return _functional(model)


def _iris(merge: Callable[[list], keras.KerasTensor]) -> keras.Model:
    sepal = keras.Input(shape=(2,), name="sepal")
    petal = keras.Input(shape=(2,), name="petal")
    a = layers.Dense(8, activation="relu")(sepal)
    b = layers.Dense(8, activation="relu")(petal)
    out = layers.Dense(3, activation="softmax")(merge([a, b]))
    return keras.Model([sepal, petal], out)


def iris_concat() -> keras.Model:
    return _iris(layers.concatenate)


def iris_add() -> keras.Model:
    return _iris(layers.add)


def multi_output() -> keras.Model:
    """Chollet, DLwP 7.1.3 (vocabulary 10,000 and a fixed length of 500)."""
    posts_input = keras.Input(shape=(500,), dtype="int32", name="posts")
    x = layers.Embedding(10000, 256)(posts_input)
    x = layers.Conv1D(128, 5, activation="relu")(x)
    x = layers.MaxPooling1D(5)(x)
    x = layers.Conv1D(256, 5, activation="relu")(x)
    x = layers.Conv1D(256, 5, activation="relu")(x)
    x = layers.MaxPooling1D(5)(x)
    x = layers.Conv1D(256, 5, activation="relu")(x)
    x = layers.Conv1D(256, 5, activation="relu")(x)
    x = layers.GlobalMaxPooling1D()(x)
    x = layers.Dense(128, activation="relu")(x)
    age = layers.Dense(1, name="age")(x)
    income = layers.Dense(10, activation="softmax", name="income")(x)
    gender = layers.Dense(1, activation="sigmoid", name="gender")(x)
    return keras.Model(posts_input, [age, income, gender])


def siamese_lstm() -> keras.Model:
    """Chollet, DLwP 7.1.5: one LSTM instance called on both inputs."""
    lstm = layers.LSTM(32)
    left_input = keras.Input(shape=(None, 128), name="left")
    left_output = lstm(left_input)
    right_input = keras.Input(shape=(None, 128), name="right")
    right_output = lstm(right_input)
    merged = layers.concatenate([left_output, right_output], axis=-1)
    predictions = layers.Dense(1, activation="sigmoid")(merged)
    return keras.Model([left_input, right_input], predictions)


def dual_camera() -> keras.Model:
    """Chollet, DLwP 7.1.5 "models as layers", with a small conv base instead of Xception."""
    image = keras.Input(shape=(64, 64, 3), name="image")
    x = layers.Conv2D(32, 3, activation="relu")(image)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    features = layers.GlobalAveragePooling2D()(x)
    camera = keras.Model(image, features, name="camera")

    left = keras.Input(shape=(64, 64, 3), name="left")
    right = keras.Input(shape=(64, 64, 3), name="right")
    merged = layers.concatenate([camera(left), camera(right)])
    x = layers.Dense(64, activation="relu")(merged)
    out = layers.Dense(1, activation="sigmoid")(x)
    return keras.Model([left, right], out)


def _inception_module(x, f1, f3_reduce, f3, f5_reduce, f5, pool_proj):
    conv = partial(layers.Conv2D, padding="same", activation="relu")
    b1 = conv(f1, 1)(x)
    b3 = conv(f3_reduce, 1)(x)
    b3 = conv(f3, 3)(b3)
    b5 = conv(f5_reduce, 1)(x)
    b5 = conv(f5, 5)(b5)
    bp = layers.MaxPooling2D(3, strides=1, padding="same")(x)
    bp = conv(pool_proj, 1)(bp)
    return layers.Concatenate(axis=-1)([b1, b3, b5, bp])


def inception() -> keras.Model:
    """GoogLeNet stem + inception modules 3a and 3b on 64x64 images."""
    inputs = keras.Input(shape=(64, 64, 3))
    x = layers.Conv2D(64, 7, strides=2, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    x = layers.Conv2D(64, 1, padding="same", activation="relu")(x)
    x = layers.Conv2D(192, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    x = _inception_module(x, 64, 96, 128, 16, 32, 32)
    x = _inception_module(x, 128, 128, 192, 32, 96, 64)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.4)(x)
    out = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, out)


_resnet_conv = partial(layers.Conv2D, kernel_size=3, strides=1, padding="same", use_bias=False)
RESNET34_FILTERS = [64] * 3 + [128] * 4 + [256] * 6 + [512] * 3


def _residual_unit(x, filters, strides):
    z = _resnet_conv(filters, strides=strides)(x)
    z = layers.BatchNormalization()(z)
    z = layers.Activation("relu")(z)
    z = _resnet_conv(filters)(z)
    z = layers.BatchNormalization()(z)
    skip = x
    if strides > 1:
        skip = _resnet_conv(filters, kernel_size=1, strides=strides)(x)
        skip = layers.BatchNormalization()(skip)
    return layers.Activation("relu")(layers.Add()([z, skip]))


def resnet34(input_shape: tuple[int, int, int] = (224, 224, 3), classes: int = 10) -> keras.Model:
    """Géron's ResNet-34, functional: his ResidualUnit's call() inlined per unit."""
    inputs = keras.Input(shape=input_shape)
    x = _resnet_conv(64, kernel_size=7, strides=2)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.MaxPooling2D(pool_size=3, strides=2, padding="same")(x)
    prev_filters = 64
    for filters in RESNET34_FILTERS:
        strides = 1 if filters == prev_filters else 2
        x = _residual_unit(x, filters, strides)
        prev_filters = filters
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Flatten()(x)
    out = layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, out)


class ResidualUnit(keras.layers.Layer):
    """Géron's ResidualUnit layer class, verbatim in spirit (HOML, "Implementing a ResNet-34 CNN")."""

    def __init__(self, filters, strides=1, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.activation = keras.activations.get(activation)
        self.main_layers = [
            _resnet_conv(filters, strides=strides),
            layers.BatchNormalization(),
            self.activation,
            _resnet_conv(filters),
            layers.BatchNormalization(),
        ]
        self.skip_layers = []
        if strides > 1:
            self.skip_layers = [_resnet_conv(filters, kernel_size=1, strides=strides), layers.BatchNormalization()]

    def call(self, inputs):
        z = inputs
        for layer in self.main_layers:
            z = layer(z)
        skip_z = inputs
        for layer in self.skip_layers:
            skip_z = layer(skip_z)
        return self.activation(z + skip_z)


def resnet34_geron() -> keras.Model:
    """The book's Sequential + ResidualUnit formulation (not layer-for-layer comparable: one layer per unit)."""
    model = keras.Sequential(
        [
            keras.Input(shape=(224, 224, 3)),
            _resnet_conv(64, kernel_size=7, strides=2),
            layers.BatchNormalization(),
            layers.Activation("relu"),
            layers.MaxPooling2D(pool_size=3, strides=2, padding="same"),
        ]
    )
    prev_filters = 64
    for filters in RESNET34_FILTERS:
        strides = 1 if filters == prev_filters else 2
        model.add(ResidualUnit(filters, strides=strides))
        prev_filters = filters
    model.add(layers.GlobalAveragePooling2D())
    model.add(layers.Flatten())
    model.add(layers.Dense(10, activation="softmax"))
    return model


def xception_small() -> keras.Model:
    """Chollet, DLwP 2nd ed. 9.3 (the augmentation layers inline instead of a nested Sequential)."""
    inputs = keras.Input(shape=(180, 180, 3))
    x = layers.RandomFlip("horizontal")(inputs)
    x = layers.RandomRotation(0.1)(x)
    x = layers.RandomZoom(0.2)(x)
    x = layers.Rescaling(1.0 / 255)(x)
    x = layers.Conv2D(filters=32, kernel_size=5, use_bias=False)(x)
    for size in [32, 64, 128, 256, 512]:
        residual = x
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(size, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(size, 3, padding="same", use_bias=False)(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        residual = layers.Conv2D(size, 1, strides=2, padding="same", use_bias=False)(residual)
        x = layers.add([x, residual])
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


def _se_residual_unit(x, filters, strides=1, ratio=16):
    conv = partial(layers.Conv2D, kernel_size=3, padding="same", use_bias=False)
    z = conv(filters, strides=strides)(x)
    z = layers.BatchNormalization()(z)
    z = layers.Activation("relu")(z)
    z = conv(filters)(z)
    z = layers.BatchNormalization()(z)
    se = layers.GlobalAveragePooling2D()(z)
    se = layers.Dense(filters // ratio, activation="relu")(se)
    se = layers.Dense(filters, activation="sigmoid")(se)
    se = layers.Reshape((1, 1, filters))(se)
    z = layers.Multiply()([z, se])
    skip = x
    if strides > 1:
        skip = layers.Conv2D(filters, 1, strides=strides, padding="same", use_bias=False)(x)
        skip = layers.BatchNormalization()(skip)
    return layers.Activation("relu")(layers.Add()([z, skip]))


def senet() -> keras.Model:
    inputs = keras.Input(shape=(32, 32, 3))
    x = layers.Conv2D(64, 3, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = _se_residual_unit(x, 64)
    x = _se_residual_unit(x, 128, strides=2)
    x = _se_residual_unit(x, 256, strides=2)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, out)


def lenet5() -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input(shape=(32, 32, 1)),
            layers.Conv2D(6, 5, activation="tanh"),
            layers.AveragePooling2D(2),
            layers.Conv2D(16, 5, activation="tanh"),
            layers.AveragePooling2D(2),
            layers.Conv2D(120, 5, activation="tanh"),
            layers.Flatten(),
            layers.Dense(84, activation="tanh"),
            layers.Dense(10, activation="softmax"),
        ]
    )
    return _functional(model)


def local_response_normalization_class() -> type:
    """The LRN layer from recipes/custom_layers.py, imported the way dlrun imports it (one class object)."""
    from dlrun.importer import Importer

    return Importer(["custom_layers.py"], RECIPES).load("custom_layers.py:LocalResponseNormalization")


def alexnet() -> keras.Model:
    lrn = local_response_normalization_class()
    norm = partial(lrn, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75)
    model = keras.Sequential(
        [
            keras.Input(shape=(227, 227, 3)),
            layers.Conv2D(96, 11, strides=4, activation="relu"),
            norm(),
            layers.MaxPooling2D(3, strides=2),
            layers.Conv2D(256, 5, padding="same", activation="relu"),
            norm(),
            layers.MaxPooling2D(3, strides=2),
            layers.Conv2D(384, 3, padding="same", activation="relu"),
            layers.Conv2D(384, 3, padding="same", activation="relu"),
            layers.Conv2D(256, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(3, strides=2),
            layers.Flatten(),
            layers.Dense(4096, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(4096, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(1000, activation="softmax"),
        ]
    )
    return _functional(model)


def vgg16() -> keras.Model:
    """The reference VGG-16 is Keras' own."""
    return keras.applications.VGG16(weights=None)


def transfer_xception() -> keras.Model:
    """Géron's flowers model: Xception base (no top, average pooling) + a 5-way softmax."""
    inputs = keras.Input(shape=(150, 150, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    base = keras.applications.Xception(
        weights=None, include_top=False, pooling="avg", input_shape=(150, 150, 3), name="xception"
    )
    x = base(x)
    out = layers.Dense(5, activation="softmax")(x)
    return keras.Model(inputs, out)


def _positions(x: keras.KerasTensor) -> keras.KerasTensor:
    """0, 1, ..., n-1 along axis 1, computed from `x` with keras.ops (as the recipes write it)."""
    count = keras.ops.cumsum(keras.ops.ones_like(x), axis=1)
    return keras.ops.subtract(count, 1)


def _transformer_layer(x: keras.KerasTensor, dim: int, heads: int, key_dim: int, ff: int, rate: float = 0.1):
    """The Keras example's TransformerBlock (post-norm), written inline with functional calls."""
    attention = layers.MultiHeadAttention(num_heads=heads, key_dim=key_dim)(x, value=x)
    x1 = layers.LayerNormalization(epsilon=1e-6)(layers.Add()([x, layers.Dropout(rate)(attention)]))
    ff_out = layers.Dense(dim)(layers.Dense(ff, activation="relu")(x1))
    return layers.LayerNormalization(epsilon=1e-6)(layers.Add()([x1, layers.Dropout(rate)(ff_out)]))


def transformer_imdb() -> keras.Model:
    """Keras' "Text classification with Transformer": token + position embedding, one block, pooling."""
    review = keras.Input(shape=(200,), dtype="int64")
    tokens = layers.Embedding(20000, 32)(review)
    positions = layers.Embedding(200, 32)(_positions(review))
    x = _transformer_layer(layers.Add()([tokens, positions]), dim=32, heads=2, key_dim=32, ff=32)
    x = layers.Dropout(0.1)(layers.GlobalAveragePooling1D()(x))
    x = layers.Dropout(0.1)(layers.Dense(20, activation="relu")(x))
    return keras.Model(review, layers.Dense(1, activation="sigmoid")(x))


def bilstm_imdb() -> keras.Model:
    """Keras' "Bidirectional LSTM on IMDB": two stacked bidirectional LSTMs over learned embeddings."""
    review = keras.Input(shape=(200,), dtype="int64")
    x = layers.Embedding(20000, 32, mask_zero=True)(review)
    x = layers.Bidirectional(layers.LSTM(32, return_sequences=True))(x)
    x = layers.Bidirectional(layers.LSTM(32))(x)
    return keras.Model(review, layers.Dense(1, activation="sigmoid")(x))


def seq2seq_reverse() -> keras.Model:
    """Chollet's character-level seq2seq: the encoder's final LSTM states start the decoder."""
    digits = keras.Input(shape=(8,), dtype="int32")
    decoder_in = keras.Input(shape=(8,), dtype="int32")
    _, state_h, state_c = layers.LSTM(128, return_state=True)(layers.Embedding(11, 32)(digits))
    x = layers.Embedding(11, 32)(decoder_in)
    x = layers.LSTM(128, return_sequences=True)(x, initial_state=[state_h, state_c])
    return keras.Model([digits, decoder_in], layers.Dense(11, activation="softmax")(x))


def vit_fashion_mnist() -> keras.Model:
    """A small vision transformer: 4x4 patches embedded by a strided convolution, learned positions,
    two transformer layers, average pooling over the patches."""
    image = keras.Input(shape=(28, 28, 1))
    patches = layers.Reshape((49, 64))(layers.Conv2D(64, 4, strides=4)(image))
    positions = layers.Embedding(49, 64)(_positions(keras.ops.mean(patches, axis=-1)))
    x = layers.Add()([patches, positions])
    for _ in range(2):
        x = _transformer_layer(x, dim=64, heads=4, key_dim=16, ff=128)
    return keras.Model(image, layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling1D()(x)))


def frames_direction() -> keras.Model:
    """A per-frame CNN applied with TimeDistributed, then an LSTM over the frame features."""
    frames = keras.Input(shape=(8, 16, 16, 1))
    x = layers.TimeDistributed(layers.Conv2D(8, 3, activation="relu"))(frames)
    x = layers.TimeDistributed(layers.MaxPooling2D(2))(x)
    x = layers.TimeDistributed(layers.Flatten())(x)
    x = layers.LSTM(16)(x)
    return keras.Model(frames, layers.Dense(1, activation="sigmoid")(x))


REFERENCES: dict[str, Callable[[], keras.Model]] = {
    "mnist_cnn": mnist_cnn,
    "fashion_mnist_cnn": fashion_mnist_cnn,
    "iris_concat": iris_concat,
    "iris_add": iris_add,
    "multi_output": multi_output,
    "siamese_lstm": siamese_lstm,
    "dual_camera": dual_camera,
    "inception": inception,
    "resnet34": resnet34,
    "xception_small": xception_small,
    "senet": senet,
    "lenet5": lenet5,
    "alexnet": alexnet,
    "vgg16": vgg16,
    "transfer_xception": transfer_xception,
    "transformer_imdb": transformer_imdb,
    "bilstm_imdb": bilstm_imdb,
    "seq2seq_reverse": seq2seq_reverse,
    "vit_fashion_mnist": vit_fashion_mnist,
    "frames_direction": frames_direction,
}
