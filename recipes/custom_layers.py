"""Custom layers for the recipe zoo, referenced from recipes as `custom_layers.py:<Class>`.

A recipe that uses one lists `custom_layers.py` under `imports:` (dlrun imports nothing unasked).
Each layer is registered with Keras' serializer, so a saved model reloads without custom_objects
once this file has been imported.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="dlrun_recipes")
class LocalResponseNormalization(keras.layers.Layer):
    """AlexNet's local response normalization across channels (Keras 3 has no such layer).

    Each activation is divided by a power of the summed squares of its neighbours along the channel
    axis (channels last), which makes strongly activated feature maps inhibit their neighbours:

        out[..., c] = x[..., c] / (bias + alpha * sum(x[..., c - r : c + r + 1] ** 2)) ** beta

    with r = `depth_radius`. Same definition and defaults as `tf.nn.local_response_normalization`,
    written with `keras.ops` so it runs on every backend. No weights.
    """

    def __init__(
        self, depth_radius: int = 5, bias: float = 1.0, alpha: float = 1.0, beta: float = 0.5, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if int(depth_radius) < 0:
            raise ValueError(f"depth_radius must be >= 0, got {depth_radius}")
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def build(self, input_shape: tuple) -> None:
        if input_shape[-1] is None:
            raise ValueError("LocalResponseNormalization needs a known number of channels (last axis)")
        self.channels = int(input_shape[-1])
        self.built = True

    def call(self, inputs):
        r = self.depth_radius
        squared = ops.square(inputs)
        pad = [[0, 0]] * (len(inputs.shape) - 1) + [[r, r]]
        padded = ops.pad(squared, pad)
        # Sum of squares over the window [c - r, c + r]: 2r + 1 shifted slices of the padded tensor.
        window = padded[..., 0 : self.channels]
        for shift in range(1, 2 * r + 1):
            window = window + padded[..., shift : shift + self.channels]
        return inputs / ops.power(self.bias + self.alpha * window, self.beta)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "depth_radius": self.depth_radius,
            "bias": self.bias,
            "alpha": self.alpha,
            "beta": self.beta,
        }
