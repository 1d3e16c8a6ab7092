"""Train, sample from or evaluate a model of the zoo.

    python -m aigc_zoo.run --model=vae                       # train on the embedded digits
    python -m aigc_zoo.run --model=vae --mode=sample         # PNG grid + .npz from the workdir
    python -m aigc_zoo.run --model=vae --mode=eval           # likelihoods, FD, KID... -> JSON
    python -m aigc_zoo.run --model=vae --mode=export         # SavedModel for TF Serving
    python -m aigc_zoo.run --model=vae --set latent_dim=32 --set beta=0.5

A mistake in the command line ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

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

from aigc_zoo import config as config_lib  # noqa: E402
from aigc_zoo import data, distribute, export, registry, train  # noqa: E402
from aigc_zoo.errors import TrainingDiverged, UserError  # noqa: E402
from aigc_zoo.metrics import modes  # noqa: E402
from aigc_zoo.metrics import sample_quality  # noqa: E402

FLAGS = flags.FLAGS
_MODELS = registry.list_models()
_DATASETS = data.list_datasets()

flags.DEFINE_enum("model", "vae", _MODELS, "Registered model to use.")
flags.DEFINE_string("dataset", None, "Dataset (default: the model's own). One of: " +
                    "; ".join(f"{name}: {text}" for name, text in _DATASETS.items()) + ".")
flags.DEFINE_string("data_dir", None, "Where TFDS datasets are prepared (TFDS' default if unset).")
flags.DEFINE_integer("image_size", None, "Resize images to this square size.")
flags.DEFINE_string("workdir", None, "Run folder (default: runs/<model>-<dataset>).")
flags.DEFINE_enum("mode", "train", ["train", "sample", "eval", "export"],
                  "What to do (export: a SavedModel with serving signatures).")
flags.DEFINE_enum("config", "default", ["default", "tiny"],
                  "Start from the model's default config or its tiny test config.")
flags.DEFINE_integer("epochs", None, "Epochs to train (config field `epochs`).")
flags.DEFINE_integer("steps_per_epoch", None, "Train steps per epoch; 0 = the whole split "
                     "(rounded down to a multiple of the model's default steps per call).")
flags.DEFINE_integer("batch_size", None, "Global batch size (config field `batch_size`).")
flags.DEFINE_multi_string("set", [], "Override a config field: --set name=value (repeatable).")
flags.DEFINE_integer("seed", 0, "Seed of weights, data order and sampling.")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                  "XLA for the train step; auto = on with a GPU/TPU; on a CPU, only for the "
                  "fully connected GANs (measured faster with it).")
flags.DEFINE_integer("steps_per_execution", None, "Train steps per compiled call (default: "
                     "the model's measured choice, 4 for GANs and VAEs, 1 for diffusion).")
flags.DEFINE_integer("log_every_steps", 50, "TensorBoard per-step summaries every N steps.")
flags.DEFINE_integer("num_samples", 64, "Images written by --mode=sample.")
flags.DEFINE_string("train_split", "train", "Split to train on (e.g. train, test[:9000]).")
flags.DEFINE_string("eval_split", "test", "Split --mode=eval measures (e.g. test, test[9000:]).")
flags.DEFINE_integer("eval_samples", 10_000, "Samples for the sample-quality metrics of "
                     "--mode=eval and --eval_every_epochs (0: skip them in --mode=eval).")
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
flags.DEFINE_enum("precision", train.DEFAULT_PRECISION, list(distribute.PRECISIONS),
                  "Keras dtype policy for training (variables stay float32); recorded in the run.")
flags.DEFINE_integer("checkpoint_every_steps", train.DEFAULT_CHECKPOINT_EVERY_STEPS,
                     "Also checkpoint inside epochs every N train steps (0: at epoch ends only); "
                     "a rerun resumes at the checkpoint's step.")
flags.DEFINE_integer("keep_checkpoints", 3, "How many of the newest checkpoints to keep.")
flags.DEFINE_bool("deterministic", False, "TensorFlow op determinism (and seeds) for runs "
                  "that resume bitwise-exactly on any device; see docs/design.md.")
flags.DEFINE_bool("overwrite", False, "Start afresh in --workdir, deleting its checkpoints, "
                  "events, samples and metrics (needed when it holds a different run).")


def _make_run() -> train.Run:
    model_class = registry.get_model(FLAGS.model)
    dataset = FLAGS.dataset or model_class.default_dataset
    base = (model_class.tiny_config() if FLAGS.config == "tiny"
            else model_class.default_config(dataset))
    assignments = [f"{name}={FLAGS[name].value}"
                   for name in ("epochs", "steps_per_epoch", "batch_size")
                   if FLAGS[name].value is not None]
    config = config_lib.override(base, assignments + FLAGS.set)
    config.validate()
    return train.Run(model=FLAGS.model, dataset=dataset,
                     config=config, seed=FLAGS.seed, train_split=FLAGS.train_split,
                     eval_split=FLAGS.eval_split, image_size=FLAGS.image_size,
                     precision=FLAGS.precision)


def _quality_options() -> sample_quality.Options:
    options = sample_quality.Options(
        num_samples=FLAGS.eval_samples, extractor=FLAGS.extractor,
        inception_weights=FLAGS.inception_weights, classifier_dir=FLAGS.classifier_dir)
    options.validate()
    return options


def _workdir(model: str, dataset: str) -> str:
    if FLAGS.workdir:
        return FLAGS.workdir
    dataset = dataset.replace(":", "-").replace(os.sep, "_").strip("_")
    return os.path.join("runs", f"{model}-{dataset}")


def _setup_devices() -> Any:
    """The strategy of the flags; initialises TensorFlow's devices (see `_quietly`)."""
    import tensorflow as tf
    strategy = distribute.make_strategy(FLAGS.strategy, num_cpu_devices=FLAGS.num_cpu_devices,
                                        tpu=FLAGS.tpu)
    tf.config.list_logical_devices()
    return strategy


def main(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)  # absl's INFO lines would bury the progress bar
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    if (FLAGS.steps_per_execution is not None and FLAGS.steps_per_execution < 1
            or FLAGS.log_every_steps < 1):
        raise UserError("bad value: --steps_per_execution and --log_every_steps must be >= 1")
    if FLAGS.eval_samples < 0 or FLAGS.eval_every_epochs < 0:
        raise UserError("bad value: --eval_samples and --eval_every_epochs must be >= 0")
    if not 0 <= FLAGS.seed < 2**32:
        raise UserError(f"bad value seed={FLAGS.seed}: expected an integer in [0, 2**32)")
    _check_reliability_flags()
    if FLAGS.mode != "train" and (FLAGS.strategy != "default" or FLAGS["precision"].present):
        raise UserError("--strategy and --precision are for --mode=train; sampling and "
                        "evaluation run on one device in the run's own precision")
    if FLAGS.mode == "train":
        # The run and its options are checked first: a typo should not wait for a TPU or join
        # a cluster before it is reported.
        run = _make_run()
        workdir = _workdir(run.model, run.dataset)
        quality = (_quality_options() if FLAGS.eval_every_epochs
                   else sample_quality.DEFAULT_OPTIONS)
        strategy = _quietly(_setup_devices)
        model = train.train(
            run, workdir=workdir, data_dir=FLAGS.data_dir, overwrite=FLAGS.overwrite,
            jit_compile={"auto": "auto", "true": True, "false": False}[FLAGS.jit_compile],
            steps_per_execution=FLAGS.steps_per_execution, log_every_steps=FLAGS.log_every_steps,
            eval_every_epochs=FLAGS.eval_every_epochs, quality=quality, eval_seed=FLAGS.seed,
            checkpoint_every_steps=FLAGS.checkpoint_every_steps,
            keep_checkpoints=FLAGS.keep_checkpoints, deterministic=FLAGS.deterministic,
            strategy=strategy)
        worker = distribute.worker_name(strategy)
        if worker:  # every worker ends with the same weights; the digests show it
            print(f"{worker}: weights digest {distribute.weights_digest(model)}")
        if worker and not distribute.is_chief(strategy):
            print(f"done: {worker}; the chief writes {workdir}")
        else:
            print(f"done: checkpoints, TensorBoard events and samples in {workdir}")
        return
    _quietly(_setup_devices)  # one device, its start-up lines filtered
    # Sampling and evaluation take the run from the workdir's config.json; an explicit
    # --model must agree with it.
    model_class = registry.get_model(FLAGS.model)
    workdir = _workdir(FLAGS.model, FLAGS.dataset or model_class.default_dataset)
    expected_model = FLAGS.model if FLAGS["model"].present else None
    if FLAGS.mode == "export":
        if FLAGS.set:
            raise UserError("--set changes training and --mode=eval settings, not exports")
        path = export.export_run(workdir, export_dir=FLAGS.export_dir,
                                 expected_model=expected_model)
        print(f"wrote SavedModel {path}")
        return
    if FLAGS.mode == "sample":
        if FLAGS.set:
            raise UserError("--set changes training and --mode=eval settings, not sampling")
        paths = train.sample(workdir, num_samples=FLAGS.num_samples, seed=FLAGS.seed,
                             expected_model=expected_model)
        print(f"wrote {paths['png']} and {paths['npz']}")
    else:
        results = train.evaluate(workdir, data_dir=FLAGS.data_dir, seed=FLAGS.seed,
                                 expected_model=expected_model, overrides=FLAGS.set,
                                 eval_split=FLAGS.eval_split if FLAGS["eval_split"].present
                                 else None,
                                 quality=_quality_options() if FLAGS.eval_samples else None)
        for name, value in results["metrics"].items():
            print(f"{name}: {value:.4f}" if isinstance(value, float) else f"{name}: {value}")
        if "sample_quality" in results:
            print(sample_quality.format_report(results["sample_quality"]))
        if "mode_coverage" in results:
            print(modes.format_report(results["mode_coverage"]))
        print(f"wrote {os.path.join(workdir, 'metrics.json')}")


def _check_reliability_flags() -> None:
    """Sizes, splits and paths, checked before anything is built or written."""
    if FLAGS.checkpoint_every_steps < 0:
        raise UserError(f"bad value checkpoint_every_steps={FLAGS.checkpoint_every_steps}: "
                        "expected >= 0 (0: at epoch ends only)")
    if FLAGS.keep_checkpoints < 1:
        raise UserError(f"bad value keep_checkpoints={FLAGS.keep_checkpoints}: expected >= 1")
    if FLAGS.num_samples < 1:
        raise UserError(f"bad value num_samples={FLAGS.num_samples}: expected an integer >= 1")
    if FLAGS.image_size is not None and FLAGS.image_size < 1:
        raise UserError(f"bad value image_size={FLAGS.image_size}: expected an integer >= 1")
    for name in ("train_split", "eval_split"):
        data.parse_split(FLAGS[name].value)
    # Folders the run may create (a dataset cache, the classifier cache, the workdir) must be
    # folders or creatable; files it reads must be readable files.
    _check_folder("data_dir", FLAGS.data_dir, writable=False)
    _check_folder("classifier_dir", FLAGS.classifier_dir, writable=True)
    _check_folder("workdir", FLAGS.workdir, writable=True)
    _check_folder("export_dir", FLAGS.export_dir, writable=True)
    weights = FLAGS.inception_weights
    if weights is not None and not (os.path.isfile(weights) and os.access(weights, os.R_OK)):
        raise UserError(f"--inception_weights={weights} is not a readable file")


def _check_folder(flag: str, path: str | None, *, writable: bool) -> None:
    if path is None:
        return
    if not path:
        raise UserError(f"--{flag} is empty; give a folder or leave the flag out")
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise UserError(f"--{flag}={path} is not a folder")
        if not os.access(path, os.R_OK | os.X_OK) or (writable and not os.access(path, os.W_OK)):
            raise UserError(f"--{flag}={path} is not {'writable' if writable else 'readable'}")
        return
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot create {flag} {path}: {parent} is not a writable folder "
                        f"(--{flag})")


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
