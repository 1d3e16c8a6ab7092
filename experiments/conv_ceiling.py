"""How fast the convolutions and dense layers of a model run on their own: the MFU ceiling.

    python experiments/conv_ceiling.py                 # dcgan and ddpm (about 2 min)
    python experiments/conv_ceiling.py --models=sngan

A train step cannot use the machine better than its convolutions and matmuls do, since they are
almost all of its FLOPs. `make benchmark` reports the combined figure per model
(`benchmark.layer_ceiling`); this prints it layer by layer. For every Conv2D, Conv2DTranspose
and Dense layer of a model's trained networks (at the default config's batch size and the
layer's own input shape), this times the layer's forward pass with both gradients (input and
kernel), as a train step runs it, in a graph-mode loop (`benchmark.layer_speed`), and counts
its FLOPs with `aigc_zoo.flops`. It prints each layer's GFLOP/s as
a share of the float32 matmul peak measured first, and the combined share: all the layers'
FLOPs over all their times, with each layer counted once. That combined share is an upper bound
on the train step's MFU, reached only if everything else in the step (normalisation,
activations, losses, optimizer updates, attention's einsums) took no time.

Writes experiments/results/conv_ceiling.md.
"""

import argparse
import datetime
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from aigc_zoo import benchmark, data, device, registry, request  # noqa: E402


def timed_layers(network: keras.Model):
    for layer in network.layers:
        if isinstance(layer, benchmark.CEILING_LAYERS):
            yield layer, tuple(layer.input.shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="dcgan,ddpm")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing budget per layer")
    args = parser.parse_args()
    peak = benchmark.matmul_peak("float32")["gflops"]
    lines = [f"Measured {datetime.date.today().isoformat()} on {device.describe()['name']}, "
             f"TensorFlow {tf.__version__}, by `python experiments/conv_ceiling.py "
             f"--models={args.models}`; float32, graph mode; float32 matmul peak "
             f"{peak:.0f} GFLOP/s (4096x4096).", "",
             "| model | network | layer | input | GFLOP (fwd + 2 grads) | ms | share of peak |",
             "| --- | --- | --- | --- | ---: | ---: | ---: |"]
    summary = []
    for name in args.models.split(","):
        model_class = registry.get_model(name)
        config = model_class.default_config("digits")
        run = request.Run(model=name, dataset="digits", config=config)
        _, info = data.open_split("digits", run.train_split)
        model = run.build_model(info.image_shape, info.num_classes)
        total_flops = total_seconds = 0.0
        model.compile(jit_compile=False)  # its update groups name the trained networks
        for network in benchmark.trained_networks(model):
            for layer, input_shape in timed_layers(network):
                count, seconds = benchmark.layer_speed(
                    layer, (config.batch_size, *input_shape[1:]), budget_seconds=args.seconds)
                total_flops += count
                total_seconds += seconds
                lines.append(f"| {name} | {network.name} | {layer.name} | "
                             f"{'x'.join(str(d) for d in input_shape[1:])} | {count / 1e9:.3f} | "
                             f"{seconds * 1e3:.2f} | {count / seconds / 1e9 / peak:.0%} |")
                print(lines[-1], flush=True)
        summary.append(f"| {name} | {total_flops / 1e9:.2f} | {total_seconds * 1e3:.1f} | "
                       f"{total_flops / total_seconds / 1e9 / peak:.0%} |")
        keras.backend.clear_session()
    lines += ["", "All of a model's timed layers together (each once):", "",
              "| model | GFLOP | ms | share of the matmul peak: the step's MFU ceiling |",
              "| --- | ---: | ---: | ---: |", *summary]
    print("\n".join(lines[-(len(summary) + 4):]))
    output = ROOT / "experiments" / "results" / "conv_ceiling.md"
    output.write_text("\n".join(lines) + "\n")
    print(f"wrote {output.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
