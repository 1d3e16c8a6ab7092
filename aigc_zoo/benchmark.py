"""Train-step speed, model FLOPs utilisation and sampling throughput on the machine at hand.

    make benchmark                                    # the full table (26 min, 2 cores)
    python -m aigc_zoo.benchmark --models=dcgan,ddpm  # some models
    python -m aigc_zoo.benchmark --quick              # one model, short windows (a smoke test)
    python -m aigc_zoo.benchmark --models=dcgan,dcgan+augment=ada   # a model with config changes

Writes `<device>_<date>.json`, `.md` and `.png` into `--output_dir` (experiments/benchmarks)
and prints the table. What is measured (numbers in the JSON; see docs/performance.md):

1. The matmul peak of the device, per dtype (float32; bfloat16 and float16 too), in the run.
2. Per model at its default config, on one real batch of its default dataset held in memory
   (so the input pipeline is not timed; item 4 times it): images/s of `model.fit` per setting
   of `jit_compile`, `steps_per_execution` and the dtype policy; the first call's extra time
   (tracing and compiling); peak host memory (RSS); FLOPs per train step (`aigc_zoo.flops`)
   and model FLOPs utilisation: achieved FLOP/s over the float32 matmul peak, and over the
   layer ceiling: what the model's convolutions and dense layers reach alone at their shapes
   (`layer_ceiling`), the part of the peak its step could use at best.
3. images/s of `generate()` per model (diffusion at 10 and 50 sampling steps).
4. images/s of each offline dataset's training pipeline (`data.load`) on its own.

The settings grid (`--grid`): `auto` measures every model in float32 with jit_compile off and
on and steps_per_execution 1 and `--large_spe` (only the runner's default for a model whose
step cannot take less than 20 ms, where a call's overhead is below the noise), and in
each other supported precision the same without XLA on a CPU (with XLA too on a GPU or TPU);
`full` measures every combination. All the
settings of a model are built and traced first, then timed in interleaved rounds, so that they
are compared under the same conditions.
"""

from __future__ import annotations

import dataclasses

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import datetime  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from aigc_zoo import benchmark_report, data, device, flops, registry, training  # noqa: E402
from aigc_zoo import config as config_lib  # noqa: E402
from aigc_zoo import request, stages  # noqa: E402
from aigc_zoo.errors import UserError  # noqa: E402
from aigc_zoo.models import base  # noqa: E402

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """The command line's flags, defined only when this module runs as the benchmark (so the
    runner's flags, `--data_dir` among them, and these can be imported into one process)."""
    flags.DEFINE_list("models", [], "Models to measure, each a name or a name with config "
                      "changes, dcgan+augment=ada (default: every registered model, then "
                      f"{', '.join(VARIANTS)}).")
    flags.DEFINE_bool("quick", False, "One model (the first of --models, else dcgan), short "
                      "windows, float32 and graph mode only: checks the benchmark runs.")
    flags.DEFINE_enum("grid", "auto", ["auto", "full"], "Which settings to measure (see --help).")
    flags.DEFINE_integer("large_spe", 4, "The larger steps_per_execution measured.")
    flags.DEFINE_float("window_seconds", 1.0, "Length of one timed window of training.")
    flags.DEFINE_integer("windows", 5, "Timed windows per setting (the median is reported).")
    flags.DEFINE_string("output_dir", "experiments/benchmarks", "Where the results are written.")
    flags.DEFINE_string("docs_chart", "docs/images/benchmark.png", "Copy of the chart for the "
                        "docs, written by a full run (not --quick, not --models); empty: none.")
    flags.DEFINE_string("data_dir", None, "TFDS data folder (digits is built there if missing).")
    flags.DEFINE_string("rerender", None, "A saved results JSON: re-write its table and chart, "
                        "marking the default settings of the code as it is now (measures nothing).")


UNPAIRED_TARGET = "shapes"  # the offline dataset an unpaired model (cyclegan) translates into
PIPELINE_DATASETS = ("digits", "ring8", "grid25")  # the offline ones; TFDS needs a download
# A step's cost does not depend on how many there are, so two counts show it; a third at 250
# steps took a diffusion model's sampling 5x longer and told nothing more.
DIFFUSION_STEPS = (10, 50)
# Measured after the registered models in a full run: what the GANs' augmentations cost a train
# step, next to plain dcgan (docs/gans.md).
VARIANTS = ("dcgan+augment=diffaugment", "dcgan+augment=ada")


def entry_run(entry: str, dataset: str | None = None) -> request.Run:
    """The run of a `--models` entry: a registered name, then any `+field=value` config changes
    (`dcgan+augment=ada`), on `dataset` (default: the model's own) with its default config.

    Raises:
        UserError: an unknown model or field, or a bad value.
    """
    name, *assignments = entry.split("+")
    model_class = registry.get_model(name)
    dataset = dataset or model_class.default_dataset
    base_config = model_class.default_config(dataset)
    # As the runner decides: text conditioning by default on a captioned dataset; cyclegan's
    # second dataset, which it needs named, `shapes` unless the entry names one.
    if request.text_by_default(base_config, assignments) and data.has_captions(dataset):
        assignments = ["conditioning=text", *assignments]
    if "target_dataset" in {field.name for field in dataclasses.fields(base_config)} and not \
            any(item.startswith("target_dataset=") for item in assignments):
        assignments = [f"target_dataset={UNPAIRED_TARGET}", *assignments]
    config = config_lib.override(base_config, assignments)
    return request.Run(model=name, dataset=dataset, config=config)


# -- the machine's ceiling ---------------------------------------------------------------------

def matmul_peak(dtype: str, *, size: int = 4096, budget_seconds: float = 4.0) -> dict[str, Any]:
    """GFLOP/s of a size x size matmul in `dtype`: median of timed calls after a warm-up."""
    generator = tf.random.Generator.from_seed(0)
    a = tf.cast(generator.normal([size, size]), dtype)
    b = tf.cast(generator.normal([size, size]), dtype)
    # One element is fetched, so the timing waits for the product without copying it out.
    product = tf.function(lambda a, b: tf.matmul(a, b)[0, 0])
    product(a, b).numpy()
    seconds = []
    while len(seconds) < 2 or (sum(seconds) < budget_seconds and len(seconds) < 7):
        start = time.perf_counter()
        product(a, b).numpy()
        seconds.append(time.perf_counter() - start)
    median = float(np.median(seconds))
    return {"dtype": dtype, "size": size, "seconds": median, "calls": len(seconds),
            "gflops": 2 * size**3 / median / 1e9}


def _matmul_peaks(*, quick: bool) -> list[dict[str, Any]]:
    peaks = [matmul_peak(dtype, size=1024 if quick else 4096)
             for dtype in ("float32", "bfloat16", "float16")]
    print("matmul peak: " + ", ".join(f"{p['dtype']} {p['gflops']:.0f}" for p in peaks)
          + " GFLOP/s", flush=True)
    return peaks


# -- what the model's own layers reach alone ---------------------------------------------------

# Almost all of a convolutional model's FLOPs are in these; the rest of its step (norms,
# activations, losses, the optimizer) adds time but few counted FLOPs.
CEILING_LAYERS = (keras.layers.Conv2D, keras.layers.Conv2DTranspose, keras.layers.Dense)


def trained_networks(model: Any) -> list[keras.Model]:
    """The model's functional sub-networks that its update groups train (not a frozen first
    stage, whose layers a train step runs forward only)."""
    trained = {id(variable) for group in model.groups for variable in group.variables}
    return [value for value in vars(model).values()
            if isinstance(value, keras.Model) and value is not model
            and any(id(weight) in trained for weight in value.trainable_weights)]


def _nested_layers(network: keras.Model):
    """The network's layers, and those of the functional networks it holds as layers (a text
    ldm's denoiser holds its U-Net)."""
    for layer in network.layers:
        if isinstance(layer, keras.Model):
            yield from _nested_layers(layer)
        else:
            yield layer


def layer_speed(layer: keras.layers.Layer, input_shape: tuple[int, ...], *,
                budget_seconds: float) -> tuple[int, float]:
    """(FLOPs, median seconds) of the layer's forward pass with its input and weight gradients,
    as a train step runs it, in a graph-mode function on random inputs of `input_shape`."""
    x = tf.random.normal(input_shape)
    upstream = tf.random.normal(layer.compute_output_shape(input_shape))

    def step(x, upstream):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        return tape.gradient(y, [x, *layer.trainable_weights], output_gradients=upstream)

    compiled = tf.function(step, autograph=False)
    count = flops.count(compiled, tf.TensorSpec(x.shape), tf.TensorSpec(upstream.shape))
    for _ in range(2):
        compiled(x, upstream)[0].numpy()
    seconds, start = [], time.perf_counter()
    while len(seconds) < 5 or (time.perf_counter() - start < budget_seconds
                               and len(seconds) < 200):
        tick = time.perf_counter()
        compiled(x, upstream)[0].numpy()
        seconds.append(time.perf_counter() - tick)
    return count, float(np.median(seconds))


def layer_ceiling(model: Any, batch_size: int, *, budget_seconds: float) -> dict[str, Any]:
    """What the convolutions and dense layers of the model's trained networks reach alone, at
    their own input shapes and the step's batch size: all their FLOPs over all their times,
    each layer counted once (layers of equal configuration and input time once). A step's MFU
    cannot pass this share of the peak unless the rest of it takes no time, so the step's
    GFLOP/s over this says how much of the time the step loses outside these layers. It is
    approximate: a GAN step runs its discriminator twice and its generator twice."""
    timed: dict[str, tuple[int, float]] = {}
    total_flops = total_seconds = 0.0
    layers = skipped = 0
    for network in trained_networks(model):
        for layer in _nested_layers(network):
            if not isinstance(layer, CEILING_LAYERS):
                continue
            try:
                shape = tuple(layer.input.shape)
            except (AttributeError, ValueError):  # a layer called more than once
                skipped += 1
                continue
            shape = (batch_size, *shape[1:])
            config = {k: v for k, v in layer.get_config().items() if k != "name"}
            key = json.dumps([type(layer).__name__, config, shape], sort_keys=True, default=str)
            if key not in timed:
                timed[key] = layer_speed(layer, shape, budget_seconds=budget_seconds)
            count, seconds = timed[key]
            total_flops += count
            total_seconds += seconds
            layers += 1
    return {"layers": layers, "distinct_layers": len(timed), "skipped_layers": skipped,
            "flops": total_flops, "seconds": total_seconds,
            "gflops_per_second": total_flops / total_seconds / 1e9 if total_seconds else 0.0}


# -- train steps -------------------------------------------------------------------------------

class _CallClock(keras.callbacks.Callback):
    """Time stamps of `fit`'s start and of the end of each compiled call."""

    def on_train_begin(self, logs: Any = None) -> None:
        self.stamps = [time.perf_counter()]

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.stamps.append(time.perf_counter())


def _reset_peak_memory() -> None:
    try:  # Linux: "5" resets the peak resident set size (VmHWM) of this process
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def _resident_memory_mib() -> float:
    """This process's resident memory now (Linux), else 0."""
    return _proc_status_mib("VmRSS") or 0.0


def _proc_status_mib(field: str) -> float | None:
    """A memory field of /proc/self/status (`VmRSS`, `VmHWM`) in MiB; None off Linux."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _peak_memory_mib() -> float:
    """Peak resident memory since the last reset (Linux), else of the whole process; on a GPU,
    the device's peak."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_memory_info(gpus[0].name)["peak"] / 2**20
    peak = _proc_status_mib("VmHWM")
    if peak is not None:
        return peak
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _build(run: request.Run, info: data.DatasetInfo, *, jit: bool, spe: int, precision: str
           ) -> Any:
    # The runner's own path: `build_model` builds in `run.precision` and restores the policy.
    # A model built on first stages gets untrained ones of their default configs: the speed
    # is the same as on trained ones.
    first_stages = stages.untrained(run.config, info.image_shape, info.num_classes)
    model = dataclasses.replace(run, precision=precision).build_model(
        info.image_shape, info.num_classes, first_stages)
    model.compile(jit_compile=jit, steps_per_execution=spe)
    return model


def _prepare(run: request.Run, info: data.DatasetInfo, batch: dict[str, tf.Tensor], *,
             jit: bool, spe: int, precision: str, window_seconds: float) -> dict[str, Any]:
    """Build one setting, trace it, and size its timed windows from its speed."""
    # Memory TensorFlow kept from earlier settings stays resident, so the peak alone would
    # grow down the table; the resident size before this setting is recorded next to it.
    resident_before = _resident_memory_mib()
    _reset_peak_memory()
    model = _build(run, info, jit=jit, spe=spe, precision=precision)
    in_memory = data.with_fixed_tuning(tf.data.Dataset.from_tensors(batch).repeat())
    clock = _CallClock()
    model.fit(in_memory, epochs=1, steps_per_epoch=3 * spe, verbose=0, shuffle=False,
              callbacks=[clock])
    first, second, third = np.diff(clock.stamps)
    call_seconds = min(second, third)
    return {"model": model, "data": in_memory, "window_seconds": [],
            "calls_per_window": max(1, round(window_seconds / call_seconds)),
            "row": {"jit_compile": jit, "steps_per_execution": spe, "precision": precision,
                    "trace_seconds": float(first - call_seconds),
                    "peak_memory_mib": _peak_memory_mib(),
                    "resident_before_mib": resident_before}}


def _error_text(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"


def _described(row: dict[str, Any]) -> str:
    return (f"jit_compile={row['jit_compile']} steps_per_execution="
            f"{row['steps_per_execution']} {row['precision']}")


def train_throughputs(run: request.Run, info: data.DatasetInfo, batch: dict[str, tf.Tensor],
                      settings: list[tuple[bool, int, str]], *, window_seconds: float,
                      windows: int) -> list[dict[str, Any]]:
    """One row per `(jit, spe, precision)` setting: images/s of `model.fit` on `batch`.

    Every setting is built and traced first, then runs one untimed window (the first window
    after the others were built ran up to 2x slow). Then `windows` rounds each time one window
    (one `fit` call of about `window_seconds`) of every setting, starting each round one
    setting further on, and a setting's speed is the median of its windows. Timed round by
    round, the settings share whatever the machine does meanwhile, so they compare fairly;
    timed one after the other, the same setting differed by about 10% between runs minutes
    apart. A setting that fails while timed becomes an error row, like one that fails to build.
    """
    prepared, rows = [], []
    for jit, spe, precision in settings:
        described = _described({"jit_compile": jit, "steps_per_execution": spe,
                                "precision": precision})
        print(f"  {run.model}: {described} ...", end="", flush=True)
        try:
            setting = _prepare(run, info, batch, jit=jit, spe=spe, precision=precision,
                               window_seconds=window_seconds)
        except Exception as error:  # noqa: BLE001 - a failing setting is a result, not a crash
            message = _error_text(error)
            print(f" failed ({message})", flush=True)
            rows.append({"jit_compile": jit, "steps_per_execution": spe,
                         "precision": precision, "error": message})
            continue
        print(f" traced in {setting['row']['trace_seconds']:.1f} s", flush=True)
        prepared.append(setting)
        rows.append(setting["row"])
    _time_rounds(prepared, windows)
    for setting in prepared:
        _summarise(run, setting)
    del prepared
    keras.backend.clear_session()
    gc.collect()
    return rows


def _time_rounds(prepared: list[dict[str, Any]], windows: int) -> None:
    """Time `windows` rounds of one window per setting, after an untimed warm-up round."""
    for round_ in range(-1, windows):  # round -1 warms up and is not recorded
        shift = max(round_, 0) % len(prepared) if prepared else 0
        for setting in prepared[shift:] + prepared[:shift]:
            if "error" in setting["row"]:
                continue
            steps = setting["calls_per_window"] * setting["row"]["steps_per_execution"]
            start = time.perf_counter()
            try:
                setting["model"].fit(setting["data"], epochs=1, steps_per_epoch=steps,
                                     verbose=0, shuffle=False)
            except Exception as error:  # noqa: BLE001 - as for a setting that fails to build
                setting["row"]["error"] = _error_text(error)
                continue
            if round_ >= 0:
                setting["window_seconds"].append(time.perf_counter() - start)


def _summarise(run: request.Run, setting: dict[str, Any]) -> None:
    """Fill a timed setting's row with its median speed, and print it."""
    row = setting["row"]
    if "error" in row:
        print(f"  {run.model}: {_described(row)}: failed while timed ({row['error']})",
              flush=True)
        return
    steps = setting["calls_per_window"] * row["steps_per_execution"]
    seconds_per_step = float(np.median(setting["window_seconds"])) / steps
    row.update(images_per_second=run.config.batch_size / seconds_per_step,
               seconds_per_step=seconds_per_step,
               window_images_per_second=[steps * run.config.batch_size / t
                                         for t in setting["window_seconds"]])
    print(f"  {run.model}: {_described(row)}: {row['images_per_second']:,.0f} images/s",
          flush=True)


def default_setting(run: request.Run, info: data.DatasetInfo, *, accelerator: bool
                    ) -> dict[str, Any]:
    """The setting the runner trains `run` with when no flag says otherwise, on a device with
    (`accelerator`) or without a GPU or TPU."""
    knobs = run.knobs(info.image_shape)
    return {"jit_compile": accelerator or base.xla_on_this_cpu(knobs.xla_on_cpu),
            "steps_per_execution": training.default_steps_per_execution(
                run, info.image_shape,
                training.epoch_length(run, info.num_examples, info.image_shape)),
            "precision": request.DEFAULT_PRECISION}


def rerender(path: str, output_dir: str, *, data_dir: str | None = None) -> list[str]:
    """Re-write the table and chart of a saved run with today's code's default settings.

    For defaults changed after a run measured them: the rows stay as measured, and the report
    says which commit's defaults it marks.
    """
    with open(path) as handle:
        results = json.load(handle)
    for model in benchmark_report.measured(results):
        run = entry_run(model["model"], model["dataset"])
        if run.config.batch_size != model["batch_size"]:
            raise UserError(f"{path}: {model['model']}'s default batch size is now "
                            f"{run.config.batch_size}, not the {model['batch_size']} measured; "
                            "its rows no longer describe the default config")
        _, info = data.open_split(model["dataset"], run.train_split, data_dir=data_dir)
        model["default_setting"] = default_setting(
            run, info, accelerator=results["device"]["kind"] != "cpu")
    results["defaults_from"] = device.git_commit()
    return benchmark_report.write(results, output_dir)


# A step that cannot take less than this is measured at the runner's default steps per call
# only: a call's own overhead (about a millisecond) is then below the noise (spe 1 and 4 were
# within 8% of each other, either way round, for every such model), and each more setting
# costs the benchmark a trace (75 s for cyclegan with XLA on a CPU) and its windows.
LONG_STEP_SECONDS = 0.02


def _settings(precisions: list[str], *, grid: str, large_spe: int, quick: bool,
              accelerator: bool, default_spe: int = 1, min_step_seconds: float = 0.0
              ) -> list[tuple[bool, int, str]]:
    """`(jit_compile, steps_per_execution, precision)` of each setting to measure: 1 and
    `large_spe` steps per call, or in the `auto` grid only the model's default (`default_spe`)
    when its step takes `LONG_STEP_SECONDS` or more at least (`min_step_seconds`)."""
    spes = [1, large_spe]
    if quick:
        return [(False, spe, "float32") for spe in spes]
    if grid == "auto" and min_step_seconds >= LONG_STEP_SECONDS:
        spes = [default_spe]
    if grid == "full" or accelerator:
        return [(jit, spe, p) for p in precisions for jit in (False, True) for spe in spes]
    # On a CPU, XLA with bfloat16 was never a model's fastest setting (docs/performance.md),
    # so the reduced precisions are measured in graph mode only.
    return [(jit, spe, p) for p in precisions for jit in ((False, True) if p == "float32"
                                                          else (False,)) for spe in spes]


def _min_step_seconds(step_flops: float, peak_gflops: float, ceiling: dict[str, Any]
                      ) -> float:
    """A lower bound of a train step's time: its layers' own (the layer ceiling; 0 when they
    are not found, as in pixelcnn's custom network), or its FLOPs at half the matmul peak
    (XLA's steps reached 1.8x the measured peak's MFU on an AVX2 CPU)."""
    return max(ceiling["seconds"], step_flops / (2 * peak_gflops * 1e9))


def benchmark_model(name: str, *, precisions: list[str], peak_gflops: float, data_dir: str | None,
                    grid: str, large_spe: int, quick: bool, window_seconds: float,
                    windows: int) -> dict[str, Any]:
    """Every train-step setting, the FLOP count and sampling speed of one `--models` entry."""
    # The runner's own batches: an image-to-image model's hold its task's sources, an
    # unpaired one's its second dataset's images, a text model's its captions' tokens.
    clock = time.perf_counter()
    seconds = {}  # where the benchmark's own time goes, by phase (its 30-minute budget)

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[phase] = now - clock
        clock = now

    run, split, info, target = training.training_data(entry_run(name), data_dir=data_dir)
    dataset = run.dataset
    batch = next(iter(training.batch_stream(run, split, info, target=target)))
    model = _build(run, info, jit=False, spe=1, precision="float32")
    step_flops = flops.train_step_flops(model, batch)
    lap("setup")
    ceiling = layer_ceiling(model, run.config.batch_size, budget_seconds=0.05 if quick else 0.3)
    print(f"  {name}: its {ceiling['layers']} convolution and dense layers alone: "
          f"{ceiling['gflops_per_second']:.0f} GFLOP/s", flush=True)
    tokens = batch["tokens"].numpy() if "tokens" in model.conditioning_specs() else None
    lap("layer_ceiling")
    sampling = sampling_throughput(model, quick=quick, tokens=tokens)
    lap("sampling")
    del model
    keras.backend.clear_session()
    accelerator = base.accelerator_present()
    default = default_setting(run, info, accelerator=accelerator)
    settings = _settings(precisions, grid=grid, large_spe=large_spe, quick=quick,
                         accelerator=accelerator,
                         default_spe=default["steps_per_execution"],
                         min_step_seconds=_min_step_seconds(step_flops, peak_gflops, ceiling))
    rows = train_throughputs(run, info, batch, settings, window_seconds=window_seconds,
                             windows=windows)
    lap("train")
    print(f"  {name}: measured in {sum(seconds.values()):.0f} s ("
          + ", ".join(f"{phase} {value:.0f}" for phase, value in seconds.items()) + ")",
          flush=True)
    for row in rows:
        if "images_per_second" in row:
            achieved = step_flops * row["images_per_second"] / run.config.batch_size
            row["gflops_per_second"] = achieved / 1e9
            row["mfu"] = achieved / 1e9 / peak_gflops
            if ceiling["gflops_per_second"]:
                row["share_of_ceiling"] = achieved / 1e9 / ceiling["gflops_per_second"]
    return {"model": name, "dataset": dataset, "image_shape": list(info.image_shape),
            "default_setting": default,
            "batch_size": run.config.batch_size, "flops_per_step": step_flops,
            "flops_per_image": step_flops / run.config.batch_size,
            "layer_ceiling": ceiling, "train": rows,
            "sampling": sampling, "seconds": seconds}


# -- sampling and input pipelines --------------------------------------------------------------

def _time_generate(model: Any, num_samples: int, calls: int, *, tokens: Any = None,
                   **options: Any) -> dict[str, Any]:
    """images/s of `generate` with `options`; a text model draws for the first `num_samples`
    of `tokens` (a batch's prompts, repeated as needed)."""
    given = options if tokens is None else {
        **options, "tokens": np.resize(tokens, (num_samples, tokens.shape[1]))}
    start = time.perf_counter()
    model.generate(num_samples, seed=0, **given).numpy()  # traces; GANs' BN statistics
    first = time.perf_counter() - start
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        model.generate(num_samples, seed=0, **given).numpy()
        seconds.append(time.perf_counter() - start)
    median = float(np.median(seconds))
    return {**options, "num_samples": num_samples, "images_per_second": num_samples / median,
            "seconds": median, "first_call_seconds": first,
            "jit_compile": model.samples_with_xla()}


def _other_xla_setting(model: Any, row: dict[str, Any], calls: int, tokens: Any
                       ) -> dict[str, Any]:
    """`row` timed again with XLA for sampling flipped (`jit_compile="auto"` picks per model:
    `Knobs.sampling_xla_on_cpu`), so the table shows what the default rests on."""
    options = {key: row[key] for key in ("steps", "cache") if key in row}
    model.sampling_jit_compile = not row["jit_compile"]
    try:
        return _time_generate(model, row["num_samples"], calls, tokens=tokens, **options)
    except tf.errors.InvalidArgumentError as error:  # an op XLA cannot compile (vqvae's draw)
        return {**options, "num_samples": row["num_samples"],
                "jit_compile": not row["jit_compile"], "error": str(error).splitlines()[0][:200]}
    finally:
        model.sampling_jit_compile = "auto"


def sampling_throughput(model: Any, *, quick: bool, tokens: Any = None
                        ) -> list[dict[str, Any]]:
    """images/s of `generate()` (models with a `steps` option: per number of steps), after a
    warm-up; a text model's for `tokens` (a training batch's prompts)."""
    options = model.sampling_options()
    if "steps" not in options:  # a fixed cost per image
        # Fewer samples for a costlier sampler (its declared network evaluations per sample).
        cost = model.knobs(model.config, model.image_shape).sampling_cost
        count = max(8, int((64 if quick else 512) / max(cost, 1)))
        if "cache" not in options:
            rows = [_time_generate(model, count, 1 if quick else 3, tokens=tokens)]
        else:
            # An autoregressive sampler, with its caches and without (a whole pass per position).
            rows = [_time_generate(model, count, 1 if quick else 3, tokens=tokens, cache=True)]
            if not quick:
                rows.append(_time_generate(model, 8, 1, tokens=tokens, cache=False))
    else:
        steps = DIFFUSION_STEPS[:1] if quick else DIFFUSION_STEPS
        # 8 samples at every step count: 50 steps of a bigger batch would dominate the run.
        rows = [_time_generate(model, 8, 1, tokens=tokens, steps=count) for count in steps]
    if not quick:
        rows.append(_other_xla_setting(model, rows[0], 1 if "steps" in options else 3, tokens))
    return rows


def pipeline_throughput(name: str, *, batch_size: int, data_dir: str | None,
                        seconds: float = 2.0) -> dict[str, Any]:
    """images/s of the training pipeline of dataset `name` alone (after its cache is filled)."""
    pipeline, info = data.load(name, "train", batch_size=batch_size, training=True,
                               data_dir=data_dir)
    iterator = iter(pipeline)
    start = time.perf_counter()
    for _ in range(max(1, info.num_examples // batch_size) + 5):  # one pass fills the cache
        next(iterator)
    warm_up = time.perf_counter() - start
    batches, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next(iterator)
        batches += 1
    elapsed = time.perf_counter() - start
    return {"dataset": name, "batch_size": batch_size, "num_examples": info.num_examples,
            "images_per_second": batches * batch_size / elapsed, "first_pass_seconds": warm_up}


# -- the whole run -----------------------------------------------------------------------------

def run_benchmark(models: list[str], *, quick: bool, grid: str, large_spe: int,
                  window_seconds: float, windows: int, data_dir: str | None) -> dict[str, Any]:
    """Measure everything; returns what the JSON file holds."""
    started = time.perf_counter()
    machine = device.describe()
    precisions = device.supported_precisions(machine)
    print(f"{machine['name']}; precisions: {', '.join(precisions)}", flush=True)
    peaks = _matmul_peaks(quick=quick)
    results = []
    for name in models:
        print(f"{name}:", flush=True)
        try:
            results.append(benchmark_model(
                name, precisions=precisions, peak_gflops=peaks[0]["gflops"], data_dir=data_dir,
                grid=grid, large_spe=large_spe, quick=quick, window_seconds=window_seconds,
                windows=windows))
        except Exception as error:  # noqa: BLE001 - one model's failure is a result, and
            # the others' measurements (minutes each) are kept
            print(f"  {name}: failed ({_error_text(error)})", flush=True)
            results.append({"model": name, "error": _error_text(error)})
            keras.backend.clear_session()
    datasets = (sorted({r["dataset"] for r in results if "dataset" in r}) if quick
                else PIPELINE_DATASETS)
    pipelines = [pipeline_throughput(name, batch_size=128, data_dir=data_dir,
                                     seconds=0.5 if quick else 2.0) for name in datasets]
    # Measured again at the end: a peak that moved means something else used the CPU.
    peaks_after = _matmul_peaks(quick=quick)
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": machine, "precisions": precisions, "quick": quick, "grid": grid,
            "command": " ".join(["python -m aigc_zoo.benchmark", *sys.argv[1:]]),
            "commit": device.git_commit(),
            "matmul_peaks": peaks, "matmul_peaks_after": peaks_after, "models": results,
            "input_pipelines": pipelines,
            "total_seconds": time.perf_counter() - started}


def main(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)  # TFDS' INFO lines would bury the progress
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    if FLAGS.large_spe < 2 or FLAGS.windows < 1 or FLAGS.window_seconds <= 0:
        raise UserError("bad value: --large_spe must be >= 2, --windows >= 1 and "
                        "--window_seconds > 0")
    if FLAGS.rerender:
        print("wrote " + ", ".join(rerender(FLAGS.rerender, FLAGS.output_dir,
                                            data_dir=FLAGS.data_dir)))
        return
    models = FLAGS.models or registry.list_models() + list(VARIANTS)
    for name in models:
        entry_run(name)  # an unknown name or a bad change is a UserError before any work
    if FLAGS.quick:
        models = models[:1] if FLAGS.models else ["dcgan"]
    quick = FLAGS.quick
    results = run_benchmark(models, quick=quick, grid=FLAGS.grid, large_spe=FLAGS.large_spe,
                            window_seconds=0.3 if quick else FLAGS.window_seconds,
                            windows=2 if quick else FLAGS.windows, data_dir=FLAGS.data_dir)
    chart_copy = FLAGS.docs_chart if not (quick or FLAGS.models) else ""
    paths = benchmark_report.write(results, FLAGS.output_dir, chart_copy=chart_copy)
    print(benchmark_report.markdown(results))
    print("wrote " + ", ".join(paths))


def _main_with_errors(argv: list[str]) -> None:
    try:
        main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    _define_flags()
    app.run(_main_with_errors)
