"""`make compare`: the keras-io recipes in experiments/baselines/ and the comparison's pieces.

The cheap tests build each recipe, take one train step on a tiny batch and draw samples; the
budget callback, the summary and the report run on that or on made-up measurements. The whole
`--quick` comparison (two trainer subprocesses, the domain classifier) is `slow`.
"""

import importlib
import json
import sys

import numpy as np
import pytest

from experiments.baselines import FAMILIES, compare

TINY_BATCH = 4


def _tiny_images(count: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, 28, 28, 1)).astype(np.uint8)


# ddim's residual U-Net is the dearest recipe to trace (7 s): `make test-slow` steps it.
@pytest.mark.parametrize("family", [pytest.param(name, marks=pytest.mark.slow)
                                    if name == "ddim" else name for name in sorted(FAMILIES)])
def test_recipe_builds_steps_and_samples(family, monkeypatch):
    recipe = importlib.import_module(FAMILIES[family][0])
    if family == "ddim":  # the recipe's U-Net, narrower and shallower, sampled in 2 steps
        monkeypatch.setattr(recipe, "SAMPLE_STEPS", 2)
        model = recipe.build(0, widths=(8, 16), block_depth=1)
    else:
        model = recipe.build(0)
    inputs, fit_kwargs = recipe.fit_inputs(_tiny_images(), batch_size=TINY_BATCH)
    if hasattr(recipe, "prepare"):
        recipe.prepare(model, inputs)
    evaluations = []

    def evaluate():
        evaluations.append(1)
        return {"fd": 1.0}

    # A zero budget: the callback stops `fit` after its first step, with one evaluation.
    budget = compare.budget_callback(evaluate, budget_seconds=0.0, eval_every=1.0,
                                     batch_size=TINY_BATCH)
    history = model.fit(inputs, epochs=3, verbose=0, callbacks=[budget], **fit_kwargs)
    assert all(np.isfinite(values[-1]) for values in history.history.values())
    assert len(evaluations) == 1 and budget.points[0]["steps"] == 1
    assert budget.points[0]["images"] == TINY_BATCH
    samples = np.asarray(recipe.generate(model, 3, seed=1))
    assert samples.shape == (3, 28, 28, 1)
    assert samples.min() >= -1.0 and samples.max() <= 1.0
    np.testing.assert_array_equal(samples, recipe.generate(model, 3, seed=1))


def _run(family, side, seed, fds, rate):
    points = [{"train_seconds": 10.0 * (i + 1), "fd": fd, "fd_real_vs_real": 0.1}
              for i, fd in enumerate(fds)]
    return {"family": family, "side": side, "seed": seed, "trainer": side, "batch_size": 64,
            "points": points, "best_fd": min(fds), "images_per_second": rate,
            "images_per_second_with_trace": rate, "peak_rss_mb": 900.0,
            "first_call_seconds": 1.0, "load_average_start": [0.1] * 3,
            "load_average_end": [0.2] * 3}


def test_summary_report_and_figure(tmp_path):
    runs = [_run("dcgan", "recipe", 0, [9.0, 5.0, 6.0], 300.0),
            _run("dcgan", "zoo", 0, [8.0, 4.9, 3.0], 900.0),
            _run("dcgan", "recipe", 1, [9.0, 2.0], 310.0),
            _run("dcgan", "zoo", 1, [7.0, 3.0], 880.0)]
    assert compare.time_to_reach(runs[1]["points"], 5.0) == 20.0
    assert compare.time_to_reach(runs[1]["points"], 1.0) is None
    summary = compare.summarize(runs, ["dcgan"])["dcgan"]
    assert summary["recipe"]["best_fd"]["values"] == [5.0, 2.0]
    assert summary["zoo_seconds_to_recipe_best_fd"]["values"] == [20.0, None]
    assert summary["zoo_reached"] == 1 and summary["repeats"] == 2
    assert summary["zoo"]["images_per_second"]["median"] == 890.0
    report = {"date": "2026-12-06", "command": "python -m x", "commit": "abc", "machine": "m",
              "budget_seconds": 30.0, "evaluations": 3, "eval_samples": 100, "repeats": 2,
              "seconds": 60.0, "load_average_start": [3.0] * 3, "load_average_end": [3.0] * 3,
              "loaded": True, "summary": {"dcgan": summary}, "runs": runs}
    table = compare.markdown(report)
    assert "not a speed comparison" in table
    assert "| dcgan | zoo: zoo | 64 | 890 (880–900) | 3.000 (3.000–3.000) | 20 s (1 of 2) |" \
        in table
    # The files, rewritten from a run's JSON as `--from_json` does.
    report.update(quick=False, families=["dcgan"])
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(report))
    assert compare.main([f"--from_json={saved}", f"--out_dir={tmp_path}",
                         f"--figure_dir={tmp_path}"]) == 0
    assert json.loads((tmp_path / "compare_dcgan.json").read_text()) == report
    assert (tmp_path / "compare_dcgan.md").read_text() == table
    assert (tmp_path / "compare_dcgan.png").stat().st_size > 0


@pytest.mark.parametrize("flags, fragment", [
    (["--families=gan"], "bad value families='gan'"),
    (["--budget_seconds=0"], "bad value budget_seconds=0.0"),
    (["--repeats=0"], "bad value repeats=0"),
])
def test_bad_flags_are_one_error_line(flags, fragment, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare.parse(flags)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]


@pytest.mark.slow
def test_quick_compare_end_to_end(tmp_path, digits_data_dir, digits_classifier_dir):
    import subprocess

    from conftest import REPO, cli_env
    result = subprocess.run(
        [sys.executable, "-m", "experiments.baselines.compare", "--quick", "--families=vae",
         "--budget_seconds=3", "--evaluations=1", "--eval_samples=40",
         f"--data_dir={digits_data_dir}", f"--classifier_dir={digits_classifier_dir}",
         f"--out_dir={tmp_path}"], capture_output=True, text=True, cwd=REPO, env=cli_env(),
        timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "quick_vae.json").read_text())
    assert {run["side"] for run in report["runs"]} == {"recipe", "zoo"}
    for run in report["runs"]:
        assert run["points"] and run["peak_rss_mb"] > 0
        assert run["points"][-1]["train_seconds"] >= 3
    assert "vae" in report["summary"] and (tmp_path / "quick_vae.png").exists()
    assert "| vae | recipe:" in (tmp_path / "quick_vae.md").read_text()
