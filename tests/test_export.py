"""`--mode=export`: SavedModels that load with TensorFlow alone and sample as the trained model.

Three tiny runs (a VAE, a GAN with batch norm and a weight average, a conditional diffusion
model) are trained on digits and exported; one subprocess that imports only TensorFlow and
numpy loads all three SavedModels and calls their signatures with TF Serving-style named
inputs (`{"inputs": {...}}`); the outputs must equal the restored models' own.
"""

import dataclasses
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import REPO, cli_command, cli_env, user_error

from aigc_zoo import config as config_lib
from aigc_zoo import export, registry, request, training, trained

# Runs in a fresh interpreter: TensorFlow and numpy only, as a serving client would have.
LOADER = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf

    requests = json.load(open(sys.argv[1]))
    outputs, models = {}, {}
    for index, request in enumerate(requests):
        if request["export_dir"] not in models:  # each SavedModel loaded once, as a server does
            models[request["export_dir"]] = tf.saved_model.load(request["export_dir"])
        loaded = models[request["export_dir"]]
        signature = loaded.signatures[request["signature_name"]]
        specs = signature.structured_input_signature[1]
        # TF Serving's REST predict: {"inputs": {name: value}} onto the signature's inputs.
        inputs = {name: tf.constant(value, specs[name].dtype)
                  for name, value in request["inputs"].items()}
        try:
            results = signature(**inputs)
        except tf.errors.InvalidArgumentError as error:  # a bad request
            outputs[f"{index}/error"] = np.array(error.message)
            continue
        for name, value in results.items():
            outputs[f"{index}/{name}"] = value.numpy()
    assert not [name for name in sys.modules if name.startswith("aigc_zoo")]
    np.savez(sys.argv[2], **outputs)
    print("signatures", sorted(loaded.signatures))
''')


def _train(name, workdir, data_dir):
    model_class = registry.get_model(name)
    config = dataclasses.replace(model_class.tiny_config(), epochs=1, steps_per_epoch=2)
    # A small train split: two steps need no 60,000-image shuffle buffer.
    run = request.Run(model=name, dataset=model_class.default_dataset, config=config,
                      train_split="train[:1024]")
    training.train(run, workdir=str(workdir), data_dir=data_dir, jit_compile=False, verbose=0,
                sample_every_epochs=0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, digits_data_dir):
    """name -> (workdir, export_dir) for a VAE, a DCGAN and a cDDPM, trained and exported."""
    runs = {name: tmp_path_factory.mktemp(name) for name in ("vae", "dcgan", "cddpm")}
    _train("vae", runs["vae"], digits_data_dir)
    # One export through the runner, as a user runs it (while the others train); the others
    # in-process.
    runner = subprocess.Popen(cli_command("--mode=export", f"--workdir={runs['vae']}"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=cli_env(), cwd=REPO)
    try:
        dirs = {}
        for name in ("dcgan", "cddpm"):
            _train(name, runs[name], digits_data_dir)
            dirs[name] = export.export_run(str(runs[name]), export_dir=str(runs[name] / "saved"))
        stdout, stderr = runner.communicate(timeout=600)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert runner.returncode == 0, stderr[-3000:]
    dirs["vae"] = export.default_export_dir(str(runs["vae"]), 2)
    assert f"wrote SavedModel {dirs['vae']}" in stdout
    return {name: (str(runs[name]), dirs[name]) for name in runs}


def _requests_and_expected(exported):
    """TF Serving-style requests and the restored models' outputs for them."""
    requests, expected = [], []

    def add(name, signature, inputs, outputs):
        requests.append({"export_dir": exported[name][1], "signature_name": signature,
                         "inputs": inputs})
        expected.append(outputs)

    _, vae = trained.restore(exported["vae"][0])
    add("vae", "generate", {"num_samples": 5, "seed": 3},
        {"images": vae.generate(5, seed=3).numpy()})
    images = np.random.default_rng(0).uniform(-1, 1, (3, 28, 28, 1)).astype(np.float32)
    mean, log_var = vae.encode(images)
    add("vae", "encode", {"images": images.tolist()},
        {"mean": mean.numpy(), "log_var": log_var.numpy()})
    latents = np.random.default_rng(1).normal(size=(2, vae.config.latent_dim))
    add("vae", "decode", {"latents": latents.tolist()},
        {"images": vae.decode(latents.astype(np.float32)).numpy()})

    _, gan = trained.restore(exported["dcgan"][0])
    add("dcgan", "generate", {"num_samples": 4, "seed": 11},
        {"images": gan.generate(4, seed=11).numpy()})

    _, diffusion = trained.restore(exported["cddpm"][0])
    add("cddpm", "generate", {"num_samples": 3, "seed": 2, "labels": []},
        {"images": diffusion.generate(3, seed=2).numpy()})
    for steps, guidance in ((2, 2.0), (4, 1.0)):
        labels = [7, 0, 3]
        add("cddpm", "sample", {"num_samples": 3, "seed": 5, "steps": steps,
                                "guidance": guidance, "labels": labels},
            {"images": diffusion.generate(3, seed=5, steps=steps, guidance=guidance,
                                          labels=labels).numpy()})
    # Bad requests fail inside the graph with a message (TF Serving answers with an error).
    bad = {"num_samples": 3, "seed": 0, "steps": 2, "guidance": 2.0, "labels": [1, 2, 3]}
    add("cddpm", "sample", {**bad, "labels": [1, 2]}, {"error": "one label per sample"})
    add("cddpm", "sample", {**bad, "labels": [1, 2, 10]}, {"error": "labels must be in [0, 10)"})
    add("cddpm", "sample", {**bad, "steps": 0}, {"error": "steps must be >= 1"})
    add("cddpm", "sample", {**bad, "steps": 51}, {"error": "steps must be <= 50"})
    # A request's size is bounded by the largest batch a network call may hold.
    largest = config_lib.largest_batch(vae.config, vae.image_shape)
    for count in (0, largest + 1, 2**31 - 1):
        add("vae", "generate", {"num_samples": count, "seed": 0},
            {"error": f"num_samples must be in [1, {largest}]"})
    return requests, expected


def test_saved_models_load_without_aigc_zoo_and_match_the_trained_models(exported, tmp_path):
    requests, expected = _requests_and_expected(exported)
    request_file, output_file = tmp_path / "requests.json", tmp_path / "outputs.npz"
    request_file.write_text(json.dumps(requests))
    result = subprocess.run([sys.executable, "-c", LOADER, str(request_file), str(output_file)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = np.load(output_file)
    for index, (served, values) in enumerate(zip(requests, expected, strict=True)):
        for name, value in values.items():
            got = outputs[f"{index}/{name}"]
            message = f"{served['export_dir']} {served['signature_name']} {name}"
            if name == "error":
                assert value in str(got), (message, str(got))
            elif served["signature_name"] in ("generate", "sample"):
                # The same traced computation and stateless random ops: bit for bit.
                np.testing.assert_array_equal(got, value, err_msg=message)
            else:
                # encode/decode run eagerly in-process and as a graph when exported.
                np.testing.assert_allclose(got, value, rtol=1e-5, atol=1e-5, err_msg=message)
    two_steps, four_steps = (outputs[f"{i}/images"] for i, (served, values) in enumerate(
        zip(requests, expected)) if served["signature_name"] == "sample" and "images" in values)
    assert not np.array_equal(two_steps, four_steps)  # `steps` really is a runtime input


def test_export_info_and_the_default_version_folder(exported):
    workdir, export_dir = exported["cddpm"]
    with open(f"{export_dir}/{export.INFO_FILE}") as handle:
        info = json.load(handle)
    assert info["model"] == "cddpm" and info["global_step"] == 2
    assert set(info["signatures"]) == {"generate", "sample"}
    assert info["signatures"]["sample"]["inputs"]["steps"] == {"dtype": "int32", "shape": []}
    assert config_lib.from_dict(registry.get_model("cddpm").config_class, info["config"])


def test_export_refuses_an_existing_folder_with_one_line(exported):
    workdir, export_dir = exported["dcgan"]
    assert user_error("--mode=export", f"--workdir={workdir}", f"--export_dir={export_dir}") \
        == f"{export_dir} already exists; delete it or pass another --export_dir"


def test_export_of_an_empty_workdir_is_one_line(tmp_path):
    assert "train there first" in user_error("--mode=export", f"--workdir={tmp_path}")
    assert not (tmp_path / "export").exists()
