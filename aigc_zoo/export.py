"""Export a trained run as a TensorFlow SavedModel with serving signatures (`--mode=export`),
and a model's `.keras` file (`KerasFile`, which `GenerativeModel` inherits).

The SavedModel needs TensorFlow alone to load (no `aigc_zoo`, no Keras model code) and serves
with TF Serving. Every model has `generate(num_samples, seed)`: the model's `sample_tensors`
with its default sampling options. A model whose `sampling_options` include runtime ones (the
diffusion models' `steps` and `guidance`) also has `sample`, which takes them as inputs; its
static options are fixed at their defaults. Conditional models also take `labels`, text
models string `prompts` (tokenised inside the graph by the run's tokenizer). A family
may add its own signatures (`GenerativeModel.serving_endpoints`: `encode`, `decode` for the
VAEs). Inputs are scalars or tensors
of fixed dtypes (int32 counts, seeds and steps, float32 guidance and images), so a TF Serving
REST request is `{"signature_name": "generate", "inputs": {"num_samples": 4, "seed": 0}}`.

The signatures run the same traceable code as the in-process `generate` (stateless random ops
seeded by [seed, 0]), so a SavedModel's samples equal the trained model's for the same seed.
GANs sample from their weight average with standing batch-norm statistics, computed before
export. See docs/export.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any, Callable, Sequence

import keras
import tensorflow as tf

from aigc_zoo import config as config_lib
from aigc_zoo import files
from aigc_zoo.errors import UserError

if TYPE_CHECKING:  # the models import this module for `KerasFile` and `ServingEndpoint`
    from aigc_zoo.models.base import GenerativeModel

INFO_FILE = os.path.join("assets.extra", "aigc_zoo.json")  # TF Serving ignores assets.extra


@dataclasses.dataclass(frozen=True)
class ServingEndpoint:
    """One signature of an exported SavedModel.

    Args:
        function: takes the named inputs of `inputs` as keyword arguments and returns a dict of
            named output tensors; traced once with `inputs` as its input signature.
        inputs: the named, typed inputs (TF Serving's request keys).
        doc: what the signature returns, written to the export's `assets.extra/aigc_zoo.json`.
    """

    function: Callable[..., dict[str, tf.Tensor]]
    inputs: Sequence[tf.TensorSpec]
    doc: str


def endpoints(model: "GenerativeModel", tokenizer: Any = None) -> dict[str, ServingEndpoint]:
    """Every signature `save_model` writes: `generate`, `sample` when the model has runtime
    sampling options, and the family's own (`serving_endpoints`). With `tokenizer` (a text
    model's `text.GraphTokenizer`), the `tokens` input becomes string `prompts` [num_samples]
    (or [1], repeated), tokenised inside the graph."""
    declared = model.sampling_options()
    defaults = model.resolved_sampling_options({})
    runtime = {name: option for name, option in declared.items() if option.dtype is not None}
    conditioning = list(model.conditioning_specs().values())
    if tokenizer is not None:
        conditioning = [tf.TensorSpec([None], tf.string, name="prompts") if spec.name == "tokens"
                        else spec for spec in conditioning]
    counts = [tf.TensorSpec([], tf.int32, name="num_samples"),
              tf.TensorSpec([], tf.int32, name="seed")]
    # A request's size is bounded by what one network call may hold (the validation layer's
    # activation estimate), so a huge `num_samples` fails at once instead of exhausting memory.
    largest = config_lib.largest_batch(model.config, model.image_shape)
    names = ["num_samples", "seed", *runtime, *(spec.name for spec in conditioning)]
    if len(set(names)) != len(names):
        raise ValueError(f"{model.registered_name}'s sampling inputs {names} repeat a name")
    images = _sampling_doc(model, largest, text=tokenizer is not None)

    # The model's own cached sampling function for the default static options: its inputs
    # are the export's, so both signatures call one traced graph (tracing a diffusion
    # sampler's loop costs seconds), and it is the graph `generate` runs in-process.
    static = {name: value for name, value in defaults.items() if name not in runtime}
    function = model.sampling_function(static)

    def sampler(inputs: Sequence[str]) -> ServingEndpoint:
        """The sampling computation taking the runtime options `inputs` as inputs."""
        specs = [*counts, *(tf.TensorSpec([], runtime[name].dtype, name=name) for name in inputs),
                 *conditioning]

        def serve(num_samples, seed, *rest):  # the archive passes inputs by position
            num_samples = _checked_count(num_samples, largest)
            given = dict(zip([spec.name for spec in specs[2:]], rest))
            if tokenizer is not None:  # one prompt serves every sample
                prompts = given.pop("prompts")
                prompts = tf.cond(tf.size(prompts) == 1,
                                  lambda: tf.repeat(prompts, num_samples), lambda: prompts)
                given["tokens"] = tokenizer(prompts)
            checked = model.check_conditioning(
                {spec.name: given[spec.name] for spec in model.conditioning_specs().values()},
                num_samples)
            values = [given[name] if name in inputs else tf.constant(defaults[name], option.dtype)
                      for name, option in runtime.items()]
            return {"images": function(num_samples, tf.cast(seed, tf.int64), *checked.values(),
                                       *values)}

        doc = images + "".join(f"; {name}: {runtime[name].doc}" for name in inputs)
        fixed = ", ".join(f"{name}={value!r}" for name, value in static.items())
        return ServingEndpoint(serve, specs, doc + (f"; fixed at export: {fixed}"
                                                    if inputs and fixed else ""))

    found = {"generate": sampler(())}
    if runtime:
        found["sample"] = sampler(tuple(runtime))
    return {**found, **model.serving_endpoints()}


def _sampling_doc(model: "GenerativeModel", largest: int, *, text: bool) -> str:
    """What a sampling signature returns and takes, for the export's info file."""
    doc = (f"images [num_samples, H, W, C] in [-1, 1] (points for 2D datasets); "
           f"num_samples in [1, {largest}]")
    if model.conditional:
        doc += "; labels [num_samples] in [0, num_classes), or [] for 0, 1, 2, ... cycling"
    if text:
        doc += ("; prompts [num_samples] (or one for all): strings of the tokenizer's words "
                "(an empty prompt, an unknown word or too many fail with its message)")
    return doc


def _checked_count(num_samples: tf.Tensor, largest: int) -> tf.Tensor:
    """`num_samples`, failing the request unless it is in [1, largest], before anything that
    depends on it (the samples) is drawn."""
    message = f"num_samples must be in [1, {largest}]; ask for more in several requests"
    with tf.control_dependencies([
            tf.debugging.assert_greater_equal(num_samples, 1, message=message),
            tf.debugging.assert_less_equal(num_samples, largest, message=message)]):
        return tf.identity(num_samples)


class KerasFile:
    """`.keras` files of a `GenerativeModel`: what `from_config` needs to rebuild the model
    (weights come separately) and its compile options."""

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "model": self.registered_name,
                "config": config_lib.to_dict(self.config), "image_shape": list(self.image_shape),
                "num_classes": self.num_classes, "seed": self.seed,
                "stages": self.stage_descriptions}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "GenerativeModel":
        values = dict(config)
        name = values.pop("model", cls.registered_name)
        if name != cls.registered_name:
            raise ValueError(f"a saved {name!r} model cannot be loaded as "
                             f"{cls.registered_name!r}")
        model_config = config_lib.from_dict(cls.config_class, values.pop("config"))
        return cls(model_config, image_shape=values.pop("image_shape"),
                   num_classes=values.pop("num_classes"), seed=values.pop("seed"),
                   stages=values.pop("stages", None), **values)

    def get_compile_config(self) -> dict[str, Any]:
        # `compile` is the model's own, so Keras' default (its optimizer, loss, ...) would not
        # fit; a loaded model is compiled again with the same options (fresh optimizers: the
        # `.keras` file is for inference and fine-tuning, checkpoints carry the training state).
        return dict(self._compile_options) if self.compiled else {}

    def compile_from_config(self, config: dict[str, Any]) -> None:
        self.compile(**config)


def default_export_dir(workdir: str, global_step: int) -> str:
    """`<workdir>/export/<global_step>`: TF Serving's layout of numbered model versions."""
    return os.path.join(workdir, "export", str(global_step))


def export_run(workdir: str, *, export_dir: str | None = None,
               expected_model: str | None = None, overrides: Sequence[str] = ()) -> str:
    """Restore the workdir's latest checkpoint and write its SavedModel; returns the folder.

    Args:
        workdir: a trained run's folder.
        export_dir: where to write (default `default_export_dir`); must not exist yet.
        expected_model: when given, the model name the workdir must hold.
        overrides: changes of the config's sampling fields: the export's defaults.
    """
    from aigc_zoo import trained  # which imports the models, which import this module

    from aigc_zoo import registry, text
    from aigc_zoo.workdir import Workdir

    # A text model's tokenizer first: a damaged one is reported before the model is built.
    saved = Workdir(workdir).require().run
    tokenizer = (text.load_for(workdir, saved.config)
                 if registry.get_model(saved.model).takes_text(saved.config) else None)
    run, model = trained.restore(workdir, expected_model=expected_model, overrides=overrides,
                                 mode="export")
    step = int(model.global_step.numpy())
    export_dir = export_dir or default_export_dir(workdir, step)
    info = {"model": run.model, "dataset": run.dataset, "global_step": step,
            "image_shape": list(model.image_shape), "num_classes": model.num_classes,
            "config": config_lib.to_dict(run.config)}
    save_model(model, export_dir, info=info, tokenizer=tokenizer)
    return export_dir


def save_model(model: GenerativeModel, export_dir: str, *,
               info: dict[str, Any] | None = None, tokenizer: Any = None
               ) -> dict[str, dict[str, Any]]:
    """Write `model`'s serving signatures as a SavedModel in `export_dir` (atomically).

    A text model given its `text.Tokenizer` takes string `prompts` (tokenised in the graph
    by a `text.GraphTokenizer`, whose lookup table the SavedModel holds, and recorded in the
    info file); without it, token ids `tokens`.

    The SavedModel is written to a temporary folder next to `export_dir` and renamed, so an
    interrupted export leaves no partial model where a server would look for one.

    Returns:
        Per signature: its inputs (name -> dtype and shape) and what it returns.
    """
    export_dir = os.path.abspath(export_dir)
    if os.path.exists(export_dir):
        raise UserError(f"{export_dir} already exists; delete it or pass another --export_dir")
    parent = os.path.dirname(export_dir)
    files.make_writable_folder(parent, what="the export's folder")
    # e.g. the GANs' standing statistics, before they are captured
    model.prepare_stages()
    model.prepare_sampling(model.resolved_sampling_options({}))
    graph_tokenizer = None
    if tokenizer is not None:
        from aigc_zoo import text
        graph_tokenizer = text.GraphTokenizer(tokenizer)
        info = {**(info or {}), "tokenizer": {"max_length": tokenizer.max_length,
                                              "vocabulary": list(tokenizer.vocabulary)}}
    served = endpoints(model, graph_tokenizer)
    archive = keras.export.ExportArchive()
    archive.track(model)
    if graph_tokenizer is not None:
        archive.track(graph_tokenizer.table)
    for name, endpoint in served.items():
        archive.add_endpoint(name, endpoint.function, input_signature=list(endpoint.inputs))
    signatures = {name: {"inputs": {spec.name: {"dtype": spec.dtype.name,
                                                "shape": spec.shape.as_list()}
                                    for spec in endpoint.inputs},
                         "returns": endpoint.doc}
                  for name, endpoint in served.items()}
    temporary = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        archive.write_out(temporary, verbose=False)
        os.makedirs(os.path.join(temporary, os.path.dirname(INFO_FILE)), exist_ok=True)
        with open(os.path.join(temporary, INFO_FILE), "w") as handle:
            json.dump({**(info or {}), "signatures": signatures}, handle, indent=2,
                      sort_keys=True)
            handle.write("\n")
        os.replace(temporary, export_dir)
    except OSError as error:
        raise UserError(f"cannot write the SavedModel to {export_dir}: {error.strerror}"
                        ) from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return signatures
