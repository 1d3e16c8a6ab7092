"""Seconds per training step and per forward pass of the diffusion U-Net at a few sizes.

    python experiments/diffusion_unet_speed.py

How the default `ddpm` config was sized for a 30-minute CPU run: for each (widths, batch, XLA)
row, one Adam step on the epsilon loss of 28x28x1 inputs and one forward pass (a sampling
step) are traced, then timed as the mean of 5 calls. Prints a markdown table.
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from aigc_zoo.models import networks  # noqa: E402

ROWS = [((16, 32, 64), 128, False), ((32, 64, 64), 128, False), ((32, 64, 64), 64, False),
        ((32, 64, 64), 128, True)]


def measure(widths: tuple[int, ...], batch: int, xla: bool, repeats: int = 5
            ) -> tuple[int, float, float]:
    net = networks.unet((28, 28, 1), widths)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(net.trainable_variables)
    x = tf.random.normal([batch, 28, 28, 1])
    t = tf.random.uniform([batch], 0, 1000)

    @tf.function(jit_compile=xla)
    def train_step(x, t):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(net([x, t], training=True) - x))
        gradients = tape.gradient(loss, net.trainable_variables)
        optimizer.apply_gradients(zip(gradients, net.trainable_variables))
        return loss

    @tf.function(jit_compile=xla)
    def forward(x, t):
        return net([x, t])

    seconds = []
    for function in (train_step, forward):
        function(x, t).numpy()  # trace
        start = time.perf_counter()
        for _ in range(repeats):
            function(x, t).numpy()
        seconds.append((time.perf_counter() - start) / repeats)
    return net.count_params(), seconds[0], seconds[1]


def main() -> None:
    print("| widths | batch | XLA | parameters | s / train step | s / forward |")
    print("| --- | --- | --- | --- | --- | --- |")
    for widths, batch, xla in ROWS:
        params, step, forward = measure(widths, batch, xla)
        print(f"| {','.join(map(str, widths))} | {batch} | {'yes' if xla else 'no'} | "
              f"{params:,} | {step:.3f} | {forward:.3f} |", flush=True)


if __name__ == "__main__":
    main()
