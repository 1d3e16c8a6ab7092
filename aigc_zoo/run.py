"""Train, sample from or evaluate a model of the zoo.

    python -m aigc_zoo.run --model=vae                       # train on the embedded digits
    python -m aigc_zoo.run --model=vae --mode=sample         # PNG grid + .npz from the workdir
    python -m aigc_zoo.run --model=vae --mode=eval           # likelihoods, FD, KID... -> JSON
    python -m aigc_zoo.run --model=vae --mode=export         # SavedModel for TF Serving
    python -m aigc_zoo.run --model=vae --set latent_dim=32 --set beta=0.5

A mistake in the command line ends with one line on stderr and exit status 2. This module
only defines and parses the flags; `aigc_zoo.request` checks what they ask for, and `train`,
`trained` and `export` do it.
"""

from __future__ import annotations

import copy
import importlib
import os
import re
import sys
import tempfile
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

# TensorFlow's C++ start-up lines (oneDNN, CUDA probing on CPU machines, CPU features) are
# written before its logging is configured, so no log level hides them. They are captured while
# TensorFlow loads and, later in `main`, while it initialises its devices (which must wait for
# the flags: logical CPU devices and multi-worker collectives are configured before that), and
# only the other lines are passed on.
_STARTUP_NOISE = re.compile(r"^([IW]\d{4} |WARNING: All log messages before absl|To enable the "
                            r"following instructions|E\d{4} .*(cuInit|cuda))")


def _quietly(function: Callable[[], Any]) -> Any:
    """`function()` with TensorFlow's C++ start-up noise filtered out of stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            return function()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured:
                if not _STARTUP_NOISE.match(line):
                    sys.stderr.write(line)


# Listing the physical devices probes CUDA (noisily) but leaves the logical devices unset.
_quietly(lambda: importlib.import_module("tensorflow").config.list_physical_devices())

from absl import app, flags, logging  # noqa: E402

from aigc_zoo import data, distribute, domains, export, registry, training, trained  # noqa: E402
from aigc_zoo import request as request_lib  # noqa: E402
from aigc_zoo.errors import TrainingDiverged, UserError  # noqa: E402

FLAGS = flags.FLAGS
_MODELS = registry.list_models()
_DATASETS = data.list_datasets()

# A string, checked against the registry when the request is made: a model registered after
# this module was imported (a family of your own) is a choice too.
flags.DEFINE_string("model", "vae", "Registered model to use: " + ", ".join(_MODELS) + ".")
flags.DEFINE_string("dataset", None, "Dataset (default: the model's own). One of: " +
                    "; ".join(f"{name}: {text}" for name, text in _DATASETS.items()) + ".")
flags.DEFINE_string("data_dir", None, "Where TFDS datasets are prepared (TFDS' default if unset).")
flags.DEFINE_integer("image_size", None, "Resize images to this square size.")
flags.DEFINE_string("workdir", None, "Run folder (default: runs/<model>-<dataset>).")
flags.DEFINE_enum("mode", "train", ["train", "sample", "eval", "export", "translate"],
                  "What to do (export: a SavedModel with serving signatures; translate: an "
                  "image-to-image model on --input, into --output).")
flags.DEFINE_string("input", None, "--mode=translate: an image file or a folder of images.")
flags.DEFINE_string("output", None, "--mode=translate: the folder the translations go to.")
flags.DEFINE_enum("config", "default", ["default", "tiny"],
                  "Start from the model's default config or its tiny test config.")
flags.DEFINE_integer("epochs", None, "Epochs to train (config field `epochs`).")
flags.DEFINE_integer("steps_per_epoch", None, "Train steps per epoch; 0 = the whole split "
                     "(rounded down to a multiple of the model's default steps per call).")
flags.DEFINE_integer("batch_size", None, "Global batch size (config field `batch_size`).")
flags.DEFINE_string("task", None, "Image-to-image models: the paired task made from the dataset "
                    "(config field `task`): sr:4 (sr), sr:2, inpaint, edges, pairs (a "
                    "pairs:<dir> dataset's own sources).")
flags.DEFINE_string("target_dataset", None, "Unpaired translation (cyclegan): the dataset "
                    "--dataset is translated into (config field `target_dataset`).")
flags.DEFINE_string("target_train_split", None, "cyclegan: the --target_dataset split to train "
                    "on (default train).")
flags.DEFINE_string("target_eval_split", None, "cyclegan: the --target_dataset split "
                    "evaluation compares with (default test).")
flags.DEFINE_enum("direction", None, ["forward", "backward"], "cyclegan, in --mode=sample|"
                  "translate|export: --dataset into --target_dataset (forward) or back.")
flags.DEFINE_multi_string("set", [], "Override a config field: --set name=value (repeatable); "
                          "in --mode=sample|eval|export|translate only its sampling fields.")
flags.DEFINE_integer("seed", 0, "Seed of weights, data order and sampling.")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                  "XLA for the train step; auto = on with a GPU/TPU; on a CPU, for the models "
                  "measured faster with it on that kind of CPU (docs/performance.md).")
flags.DEFINE_integer("steps_per_execution", None, "Train steps per compiled call (default: "
                     "the model's measured choice, 4 for GANs and VAEs, 1 for diffusion).")
flags.DEFINE_integer("log_every_steps", 50, "TensorBoard per-step summaries every N steps.")
flags.DEFINE_integer("sample_every_epochs", 1, "While training, draw the sample picture "
                     "(samples/epoch_NNNN.png and TensorBoard) every N epochs (0: never).")
flags.DEFINE_integer("num_samples", 64, "Images written by --mode=sample.")
flags.DEFINE_list("labels", None, "--mode=sample of a conditional model: the labels to draw, "
                  "repeated to --num_samples (7: all sevens; 0,1,2: in turn).")
flags.DEFINE_multi_string("prompt", [], "--mode=sample of a text model: a prompt (repeatable); "
                          "each gets --samples_per_prompt samples, a row of the picture. "
                          "Default: the first distinct captions of the eval split.")
flags.DEFINE_string("prompts_file", None, "--mode=sample of a text model: a file of prompts, "
                    "one a line (instead of --prompt).")
flags.DEFINE_integer("samples_per_prompt", None, "--mode=sample of a text model: samples per "
                     f"prompt (default {request_lib.DEFAULT_SAMPLES_PER_PROMPT}).")
flags.DEFINE_string("train_split", "train", "Split to train on (e.g. train, test[:9000]).")
flags.DEFINE_string("eval_split", "test", "Split --mode=eval measures (e.g. test, test[9000:]).")
flags.DEFINE_integer("eval_samples", None, "Samples for the sample-quality metrics of "
                     "--mode=eval and --eval_every_epochs (0: skip them in --mode=eval; default: "
                     "100,000 / the model's sampling cost, from 1,000 to 10,000).")
flags.DEFINE_enum("extractor", "classifier", ["classifier", "inception"],
                  "Features for sample quality: the dataset's domain classifier (offline, "
                  "trained once and cached) or Inception-v3 (FID; needs its weights).")
flags.DEFINE_string("inception_weights", None, "Local Keras Inception-v3 weights file "
                    "(inception_v3_weights_tf_dim_ordering_tf_kernels.h5); unset: download.")
flags.DEFINE_string("classifier_dir", None, "Cache of domain classifiers (default: "
                    "$AIGC_ZOO_CACHE/classifiers or ~/.cache/aigc_zoo/classifiers).")
flags.DEFINE_integer("eval_every_epochs", 0, "While training, measure sample quality every "
                     "N epochs into tensorboard/eval (0: never).")
flags.DEFINE_string("export_dir", None, "Where --mode=export writes the SavedModel (default: "
                    "<workdir>/export/<global_step>); must not exist yet.")
flags.DEFINE_enum("strategy", "default", list(distribute.STRATEGIES),
                  "tf.distribute strategy for training: default (one device), mirrored (every "
                  "local GPU, or every logical CPU device), multiworker (TF_CONFIG), tpu.")
flags.DEFINE_integer("num_cpu_devices", 1, "Split the CPU into N logical devices (to try "
                     "--strategy=mirrored without GPUs).")
flags.DEFINE_string("tpu", "", "For --strategy=tpu: the TPU's name, grpc:// address, or local.")
flags.DEFINE_enum("precision", request_lib.DEFAULT_PRECISION, list(distribute.PRECISIONS),
                  "Keras dtype policy for training (variables stay float32); recorded in the run.")
flags.DEFINE_integer("checkpoint_every_steps", request_lib.DEFAULT_CHECKPOINT_EVERY_STEPS,
                     "Also checkpoint inside epochs every N train steps (0: at epoch ends only); "
                     "a rerun resumes at the checkpoint's step.")
flags.DEFINE_integer("keep_checkpoints", 3, "How many of the newest checkpoints to keep.")
flags.DEFINE_bool("deterministic", False, "TensorFlow op determinism (and seeds) for runs "
                  "that resume bitwise-exactly on any device; see docs/design.md.")
flags.DEFINE_bool("overwrite", False, "Start afresh in --workdir, deleting its checkpoints, "
                  "events, samples and metrics (needed when it holds a different run).")


def parse(argv: list[str]) -> request_lib.Request:
    """The checked request of a command line (`argv[0]` is the program), without running it
    (`execute` runs it); a `UserError` for a bad one. The runner's own flags stay as they
    were, so tests can check command lines in-process."""
    values = copy.deepcopy(FLAGS)
    values.unparse_flags()
    try:
        rest = values(argv)
    except flags.Error as error:
        raise UserError(str(error).splitlines()[0]) from None
    return _request(values, rest[1:])


def _request(values: flags.FlagValues, extra_args: list[str]) -> request_lib.Request:
    present = {name for name in values if values[name].present}
    return request_lib.from_flags(values.flag_values_dict(), present=present,
                                  extra_args=extra_args)


def setup_devices(name: str = "default", *, num_cpu_devices: int = 1, tpu: str = "") -> Any:
    """The strategy `name`; initialises TensorFlow's devices (see `_quietly`)."""
    import tensorflow as tf
    strategy = distribute.make_strategy(name, num_cpu_devices=num_cpu_devices, tpu=tpu)
    tf.config.list_logical_devices()
    return strategy


def main(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)  # absl's INFO lines would bury the progress bar
    # The request is checked first: a typo should not wait for a TPU or join a cluster
    # before it is reported.
    execute(_request(FLAGS, argv[1:]))


def execute(request: request_lib.Request) -> None:
    """Do what `request` asks (as `main` does after parsing), printing what it wrote."""
    if isinstance(request, request_lib.TrainRequest):
        _train(request)
        return
    _quietly(setup_devices)  # one device, its start-up lines filtered
    if isinstance(request, request_lib.ExportRequest):
        path = export.export_run(request.workdir, export_dir=request.export_dir,
                                 expected_model=request.expected_model,
                                 overrides=request.overrides)
        print(f"wrote SavedModel {path}")
    elif isinstance(request, request_lib.TranslateRequest):
        from aigc_zoo import translate
        translate.run(request.workdir, request.input, request.output, seed=request.seed,
                      expected_model=request.expected_model, overrides=request.overrides)
    elif isinstance(request, request_lib.SampleRequest):
        paths = trained.sample(request)
        print(f"wrote {paths['png']} and {paths['npz']}")
    else:
        results = trained.evaluate(request)
        for name, value in results["metrics"].items():
            print(f"{name}: {value:.4f}" if isinstance(value, float) else f"{name}: {value}")
        report = domains.for_dataset(results["dataset"],
                                     task=results.get("task", "")).report(results)
        if report:
            print(report)
        print(f"wrote {os.path.join(request.workdir, 'metrics.json')}")


def _train(request: request_lib.TrainRequest) -> None:
    strategy = _quietly(lambda: setup_devices(request.strategy,
                                               num_cpu_devices=request.num_cpu_devices,
                                               tpu=request.tpu))
    model = training.train(request.run, request.options, strategy=strategy)
    workdir = request.options.workdir
    worker = distribute.worker_name(strategy)
    if worker:  # every worker ends with the same weights; the digests show it
        print(f"{worker}: weights digest {distribute.weights_digest(model)}")
    if worker and not distribute.is_chief(strategy):
        print(f"done: {worker}; the chief writes {workdir}")
    else:
        print(f"done: checkpoints, TensorBoard events and samples in {workdir}")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return FLAGS(argv)
    except flags.Error as error:
        _fail(str(error).splitlines()[0])
    except SystemExit as done:
        # absl exits with status 1 after printing --help; asking for help is not a failure.
        help_flags = ("--help", "-h", "-?", "--helpshort", "--helpfull")
        asked_for_help = any(arg.split("=")[0] in help_flags for arg in argv[1:])
        sys.exit(0 if asked_for_help else done.code)


def _main_with_errors(argv: list[str]) -> None:
    try:
        main(argv)
    except UserError as error:
        _fail(str(error))
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept; rerun the same command to resume",
              file=sys.stderr)
        sys.exit(130)


def console_main() -> None:
    """Entry point of the `aigc-zoo` console script."""
    app.run(_main_with_errors, flags_parser=_parse_flags)


if __name__ == "__main__":
    console_main()
