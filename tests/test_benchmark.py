"""The FLOP counter against closed forms, and `python -m aigc_zoo.benchmark --quick` end to end."""

import json
import subprocess
import sys

import keras
import pytest
import tensorflow as tf

from conftest import REPO
from aigc_zoo import flops


def test_dense_flops_match_the_closed_form():
    layer = keras.layers.Dense(16)
    layer.build((8, 32))
    # A [8, 32] x [32, 16] matmul is 2*8*32*16 FLOPs (multiply-add = 2); the bias adds 8*16.
    assert flops.count(lambda x: layer(x), tf.TensorSpec([8, 32])) == 2 * 8 * 32 * 16 + 8 * 16


def test_conv2d_flops_match_the_closed_form():
    layer = keras.layers.Conv2D(8, 3, strides=2, padding="same")
    layer.build((4, 10, 10, 3))
    # Output 4 x 5 x 5 x 8; each output element is a 3x3x3 multiply-add, plus its bias.
    outputs = 4 * 5 * 5 * 8
    expected = 2 * outputs * 3 * 3 * 3 + outputs
    assert flops.count(lambda x: layer(x), tf.TensorSpec([4, 10, 10, 3])) == expected


def test_dense_gradient_flops_count_both_backward_matmuls():
    layer = keras.layers.Dense(16, use_bias=False)
    layer.build((8, 32))

    def gradients(x):
        with tf.GradientTape() as tape:
            y = layer(x)
        return tape.gradient(y, [x, layer.kernel], output_gradients=tf.ones_like(y))

    # Forward, input gradient and kernel gradient: three matmuls of 2*8*32*16 each.
    counted = flops.count(lambda x: gradients(x), tf.TensorSpec([8, 32]))
    assert counted == 3 * 2 * 8 * 32 * 16


def test_einsum_flops_are_counted():
    a, b = tf.TensorSpec([2, 3, 4]), tf.TensorSpec([2, 4, 5])
    # Indices b=2, i=3, j=4, k=5: one multiply-add per combination.
    assert flops.count(lambda x, y: tf.einsum("bij,bjk->bik", x, y), a, b) == 2 * 2 * 3 * 4 * 5


def test_batch_matmul_flops_follow_the_adjoint_flags():
    a, b = tf.TensorSpec([2, 7, 3]), tf.TensorSpec([2, 7, 5])
    # a^T b: [2, 3, 5] outputs, each a sum over 7 products.
    counted = flops.count(lambda x, y: tf.matmul(x, y, adjoint_a=True), a, b)
    assert counted == 2 * 2 * 3 * 5 * 7
    c = tf.TensorSpec([2, 5, 3])
    counted = flops.count(lambda x, y: tf.matmul(x, y, adjoint_b=True), tf.TensorSpec([2, 4, 3]), c)
    assert counted == 2 * 2 * 4 * 5 * 3


@pytest.mark.slow  # `make benchmark` has its own budget; this runs its --quick form
def test_quick_benchmark_writes_every_field(tmp_path, digits_data_dir):
    result = subprocess.run(
        [sys.executable, "-m", "aigc_zoo.benchmark", "--quick", "--models=gan",
         f"--output_dir={tmp_path}", f"--data_dir={digits_data_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (json_path,) = tmp_path.glob("*_quick.json")
    assert json_path.with_suffix(".md").exists() and json_path.with_suffix(".png").exists()
    results = json.loads(json_path.read_text())
    assert {"date", "device", "precisions", "command", "matmul_peaks", "matmul_peaks_after",
            "models", "input_pipelines", "total_seconds", "commit"} <= set(results)
    assert results["precisions"][0] == "float32"
    assert [p["dtype"] for p in results["matmul_peaks"]] == ["float32", "bfloat16", "float16"]
    assert all(p["gflops"] > 0 for p in results["matmul_peaks"])
    (model,) = results["models"]
    assert model["model"] == "gan" and model["flops_per_step"] > 0
    # Where the run's time went, by phase, adds up to no more than the whole run.
    assert set(model["seconds"]) == {"setup", "layer_ceiling", "sampling", "train"}
    assert 0 < sum(model["seconds"].values()) < results["total_seconds"]
    # What the runner would use: gan is the one model with XLA on a CPU, 4 steps per call.
    assert model["default_setting"] == {"jit_compile": True, "steps_per_execution": 4,
                                        "precision": "float32"}
    assert {(r["jit_compile"], r["steps_per_execution"]) for r in model["train"]} == {
        (False, 1), (False, 4)}
    for row in model["train"]:
        assert "error" not in row, row
        for key in ("images_per_second", "seconds_per_step", "trace_seconds",
                    "peak_memory_mib", "resident_before_mib", "gflops_per_second", "mfu"):
            assert row[key] > 0 or key == "trace_seconds", (key, row)
        assert len(row["window_images_per_second"]) == 2
        assert row["peak_memory_mib"] >= row["resident_before_mib"]
    (sampling,) = model["sampling"]
    assert sampling["images_per_second"] > 0 and sampling["num_samples"] > 0
    assert [p["dataset"] for p in results["input_pipelines"]] == ["digits"]
    assert results["input_pipelines"][0]["images_per_second"] > 0
    assert "| gan |" in result.stdout  # the table is printed
    assert "## Where the run's time went" in result.stdout

    # Re-rendering a saved run marks today's defaults and measures nothing.
    expected = dict(model["default_setting"])
    results["models"][0]["default_setting"] = {"jit_compile": False, "steps_per_execution": 1,
                                               "precision": "float32"}
    json_path.write_text(json.dumps(results))
    from aigc_zoo import benchmark  # in-process: it defines its flags only as a program
    benchmark.rerender(str(json_path), str(tmp_path / "again"), data_dir=digits_data_dir)
    again = json.loads((tmp_path / "again" / json_path.name).read_text())
    assert again["models"][0]["default_setting"] == expected
    assert again["models"][0]["train"] == model["train"]
    assert again["defaults_from"] == results["commit"]
    text = (tmp_path / "again" / json_path.with_suffix(".md").name).read_text()
    assert "Default settings marked as the code of commit" in text


def test_unknown_model_is_one_error_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "aigc_zoo.benchmark", "--models=nope", f"--output_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown model 'nope'")


def test_a_long_step_is_measured_at_its_default_steps_per_call_only():
    from aigc_zoo import benchmark
    grid = dict(precisions=["float32"], large_spe=4, quick=False, accelerator=False)
    every = [(False, 1, "float32"), (False, 4, "float32"), (True, 1, "float32"),
             (True, 4, "float32")]
    def measured(grid_name, default_spe, min_step_seconds):
        return benchmark._settings(**grid, grid=grid_name, default_spe=default_spe,
                                   min_step_seconds=min_step_seconds)
    assert measured("auto", 1, 0.5) == [(False, 1, "float32"), (True, 1, "float32")]
    assert measured("auto", 4, 0.5) == [(False, 4, "float32"), (True, 4, "float32")]
    # A short step, or the full grid: both.
    assert measured("auto", 1, 0.005) == every
    assert measured("auto", 4, 0.005) == every
    assert measured("full", 1, 0.5) == every
    # The bound: the layers' own time, or the FLOPs at half the peak when no layer was found.
    ceiling = {"seconds": 0.0}
    assert benchmark._min_step_seconds(4e9, 100.0, ceiling) == 0.02
    assert benchmark._min_step_seconds(4e9, 100.0, {"seconds": 0.5}) == 0.5


def test_each_setting_is_built_in_its_own_precision():
    # In the same process as the runner's tests: the benchmark defines its flags only when it
    # runs as a program, so importing it clashes with no `aigc_zoo.run` flag.
    from aigc_zoo import benchmark, data, registry, request, run as runner  # noqa: F401
    run = request.Run(model="vae", dataset="digits",
                      config=registry.get_model("vae").tiny_config())
    info = data.DatasetInfo(name="digits", image_shape=(28, 28, 1), num_classes=10,
                            num_examples=64)
    for precision in ("mixed_bfloat16", "float32"):
        model = benchmark._build(run, info, jit=False, spe=1, precision=precision)
        assert model.dtype_policy.name == precision, (model.dtype_policy.name, precision)
    assert keras.mixed_precision.global_policy().name == "float32"  # nothing leaks


def test_the_layer_ceiling_times_each_trained_convolution_and_dense_layer_once():
    from conftest import tiny_model
    from aigc_zoo import benchmark
    model = tiny_model("dcgan")
    layers = [layer for network in (model.generator, model.discriminator)
              for layer in network.layers if isinstance(layer, benchmark.CEILING_LAYERS)]
    ceiling = benchmark.layer_ceiling(model, 8, budget_seconds=0.0)
    assert ceiling["layers"] == len(layers) > 0 and ceiling["skipped_layers"] == 0
    assert 0 < ceiling["distinct_layers"] <= ceiling["layers"]
    # Forward and both gradients: about three times the forward FLOPs, at the given batch.
    forward = sum(flops.count(lambda x, layer=layer: layer(x),
                              tf.TensorSpec((8, *layer.input.shape[1:]))) for layer in layers)
    assert 2.5 * forward < ceiling["flops"] < 3.5 * forward
    assert ceiling["gflops_per_second"] == ceiling["flops"] / ceiling["seconds"] / 1e9 > 0
    # A frozen first stage runs forward only in a step: ldm's ceiling is its U-Net's.
    assert [n.name for n in benchmark.trained_networks(tiny_model("ldm"))] == ["unet"]


def test_the_report_shows_the_share_of_the_layer_ceiling_and_a_dash_for_older_runs():
    from aigc_zoo import benchmark_report
    path = REPO / "experiments" / "benchmarks" / "cpu-amd-epyc-2-cores_2026-11-29.json"
    results = json.loads(path.read_text())
    older = benchmark_report.markdown(results)
    model = results["models"][0]
    model["layer_ceiling"] = {"gflops_per_second": 400.0}
    for row in model["train"]:
        if "mfu" in row:
            row["share_of_ceiling"] = row["gflops_per_second"] / 400.0
    best32 = benchmark_report.fastest(model, "float32")
    summary = next(line for line in benchmark_report.markdown(results).splitlines()
                   if line.startswith(f"| {model['model']} | "))
    assert f"| 400 | {best32['gflops_per_second'] / 400:.0%} |" in summary
    assert f"| {model['model']} | " in older and "| – | – |" in older


@pytest.mark.slow  # builds dalle's tokenizer from 60,000 captions (8 s)
def test_entries_are_the_runners_runs_text_and_a_second_dataset_included(digits_data_dir):
    from aigc_zoo import benchmark, training
    # As the runner decides: text on captioned digits; cyclegan translates into `shapes`.
    assert benchmark.entry_run("ldm").config.conditioning == "text"
    assert benchmark.entry_run("ldm+conditioning=label").config.conditioning == "label"
    run = benchmark.entry_run("dalle")
    run, split, info, target = training.training_data(run, data_dir=digits_data_dir)
    assert run.config.text_vocabulary_size > 2 and "tokens" in split.element_spec
    assert target is None
    cyclegan = benchmark.entry_run("cyclegan")
    assert cyclegan.config.target_dataset == benchmark.UNPAIRED_TARGET


def test_a_model_that_fails_is_a_row_and_the_others_are_still_measured(monkeypatch):
    from aigc_zoo import benchmark, benchmark_report

    def fake(name, **kwargs):
        if name == "broken":
            raise RuntimeError("out of memory\nmore")
        return {"model": name, "dataset": "digits"}

    monkeypatch.setattr(benchmark, "benchmark_model", fake)
    monkeypatch.setattr(benchmark, "_matmul_peaks", lambda quick: [{"gflops": 1.0}])
    monkeypatch.setattr(benchmark, "pipeline_throughput", lambda *a, **k: {})
    results = benchmark.run_benchmark(["dcgan", "broken", "vae"], quick=True, grid="auto",
                                      large_spe=4, window_seconds=0.1, windows=1, data_dir=None)
    assert [m["model"] for m in results["models"]] == ["dcgan", "broken", "vae"]
    assert results["models"][1] == {"model": "broken", "error": "RuntimeError: out of memory"}
    assert [m["model"] for m in benchmark_report.measured(results)] == ["dcgan", "vae"]
    assert "broken: RuntimeError: out of memory" in benchmark_report._failures(results)[0]
