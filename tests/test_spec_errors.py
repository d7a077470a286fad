"""Bad specs: each gives one paragraph naming the file, the key and the fix, exit status 2, no traceback.

Most cases call the CLI's ``main()`` in-process (same code path, without paying for a torch
import per case); a few run the real ``python -m tuiloop`` command.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli, write_spec

from tuiloop.cli import main


def cli_error(capsys: pytest.CaptureFixture[str], *args: str | Path) -> str:
    """Run ``tuiloop ARGS`` in-process; it must fail with status 2; returns its one-paragraph error."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert err.startswith("tuiloop: error: "), err
    assert err.count("\n") == 1, f"not one paragraph: {err!r}"
    return err


def run_error(capsys: pytest.CaptureFixture[str], spec: Path, *sets: str) -> str:
    args: list[str | Path] = ["run", spec, "--headless"]
    for s in sets:
        args += ["--set", s]
    return cli_error(capsys, *args)


def has_all(text: str, *parts: str) -> None:
    for p in parts:
        assert p in text, f"{p!r} not in {text!r}"


# ---- structure: sections, keys, types, choices ------------------------------------------------
def test_unknown_section_with_did_you_mean(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(workdir, modle={"target": "tiny.py:MLP"})
    err = run_error(capsys, spec)
    has_all(err, "spec.toml", "[modle]", "not a section", "Did you mean 'model'?", "[early_stopping]")


def test_unknown_key_with_did_you_mean(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(workdir, run={"epoch": 3})
    err = run_error(capsys, spec)
    has_all(err, "spec.toml, [run] epoch", "'epoch' is not a key of [run]", "Did you mean 'epochs'?", "Keys of [run]:")


@pytest.mark.parametrize(
    ("section", "key", "value", "meant"),
    [
        ("run", "epochs", "60", "epochs = 60"),
        ("data", "shuffle", "false", "shuffle = false"),
        ("run", "name", 5, 'name = "5"'),
    ],
)
def test_a_value_of_the_wrong_type_suggests_the_value_meant(
    workdir: Path, capsys: pytest.CaptureFixture[str], section: str, key: str, value: object, meant: str
) -> None:
    err = run_error(capsys, write_spec(workdir, **{section: {key: value}}))
    has_all(err, f"[{section}] {key}", f"Write it as, for example, {meant}.")


def test_a_quoted_number_for_an_optimizer_argument_says_to_write_it_without_quotes(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An optimizer argument is checked against the optimizer's own default, not the schema."""
    err = run_error(capsys, write_spec(workdir, optimizer={"lr": "1e-3"}))
    has_all(
        err, "[optimizer] lr", "lr was read as the string '1e-3'", "expects a number", "Write a number without quotes"
    )


@pytest.mark.parametrize("name", ["a/b", "..", "../up", "tab\there", "bell\x07"])
def test_run_name_must_be_a_plain_folder_name(workdir: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    err = run_error(capsys, write_spec(workdir, run={"name": name}))
    has_all(err, "[run] name", "becomes the run directory's folder name", "Use letters, digits")
    assert not (workdir / "runs").exists()


def test_wrong_type_names_key_and_example(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(workdir, run={"epochs": "ten"})
    err = run_error(capsys, spec)
    has_all(err, "spec.toml, [run] epochs", "expected an integer, got 'ten' (a string)", "epochs = 1")
    err = run_error(capsys, write_spec(workdir, data={"shuffle": "yes"}))
    has_all(err, "[data] shuffle", "expected a boolean", "shuffle = true")


def test_bool_is_not_an_integer(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_error(capsys, write_spec(workdir, run={"epochs": True}))
    has_all(err, "[run] epochs", "expected an integer, got True (a boolean)")


def test_an_unknown_scheduler_interval_names_the_choices_and_the_closest(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(workdir, scheduler={"target": "StepLR", "step_size": 1, "interval": "epochs"})
    err = run_error(capsys, spec)
    has_all(err, "spec.toml, [scheduler] interval", "'epochs' is not one of 'epoch', 'step'", "Did you mean 'epoch'?")


def test_an_unknown_early_stopping_mode_names_the_choices_and_the_closest(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = run_error(capsys, write_spec(workdir, early_stopping={"mode": "maximum"}))
    has_all(err, "[early_stopping] mode", "'maximum' is not one of 'min', 'max'", "Did you mean 'max'?")


def test_out_of_range_values_say_the_bound_and_the_fix(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    has_all(
        run_error(capsys, write_spec(workdir, run={"epochs": 0})),
        "[run] epochs",
        "at least 1, got 0",
        "epochs = 1 or more",
    )
    has_all(run_error(capsys, write_spec(workdir, data={"batch_size": 0})), "[data] batch_size", "at least 1")
    has_all(
        run_error(capsys, write_spec(workdir, early_stopping={"patience": 0})),
        "[early_stopping] patience",
        "Remove [early_stopping]",
    )
    has_all(
        run_error(capsys, write_spec(workdir, early_stopping={"min_delta": -0.1})),
        "[early_stopping] min_delta",
        "cannot be negative",
    )


# Every range and value check of tuiloop's own keys, each message whole: they are declared with
# their key (tuiloop/spec/schema.py) and must read as they did when each was written by hand.
@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("run", "epochs", 0, "must be at least 1, got 0. Set epochs = 1 or more."),
        ("run", "val_every", -2, "must be at least 1, got -2. Set val_every = 1 or more."),
        ("run", "log_interval", 0, "must be a positive number of seconds. For example log_interval = 0.25."),
        ("run", "log_interval", -0.5, "must be a positive number of seconds. For example log_interval = 0.25."),
        (
            "run",
            "nproc_per_node",
            0,
            'must be a number of processes (1 or more) or "auto", got 0. For example nproc_per_node = 4, or "auto" for one per visible GPU.',
        ),
        (
            "run",
            "nproc_per_node",
            "all",
            'must be a number of processes (1 or more) or "auto", got \'all\'. For example nproc_per_node = 4, or "auto" for one per visible GPU.',
        ),
        ("data", "batch_size", 0, "must be at least 1, got 0. Set batch_size = 32, for example."),
        ("data", "val_batch_size", 0, "must be at least 1, got 0. Set val_batch_size = 32, for example."),
        ("data", "num_workers", -1, "cannot be negative. Use 0 to load in the training process."),
        (
            "data",
            "multiprocessing_context",
            "spwan",
            "'spwan' is not one of 'fork', 'spawn', 'forkserver'. Did you mean 'spawn'?",
        ),
        (
            "early_stopping",
            "patience",
            0,
            "must be at least 1, got 0. Remove [early_stopping] to train for all epochs.",
        ),
        (
            "early_stopping",
            "min_delta",
            -1,
            "cannot be negative. It is the smallest improvement that counts, e.g. 0.001.",
        ),
        ("checkpoint", "every_n_epochs", -1, "cannot be negative. Use 0 to turn periodic checkpoints off."),
        ("checkpoint", "mode", "up", "'up' is not one of 'min', 'max'"),
        (
            "train",
            "accumulate_grad_batches",
            0,
            "must be at least 1, got 0. Use 1 to step the optimizer after every batch.",
        ),
        (
            "train",
            "gradient_clip_val",
            -1.0,
            "cannot be negative. Use 0 to turn clipping off, or a positive limit such as 1.0.",
        ),
        ("train", "gradient_clip_algorithm", "l2", "'l2' is not one of 'norm', 'value'"),
        (
            "train",
            "compile",
            "max_autotune",
            "'max_autotune' is not a torch.compile mode. Did you mean 'max-autotune'? "
            "Use true, false, or one of 'default', 'reduce-overhead', 'max-autotune'.",
        ),
        (
            "train",
            "precision",
            "bf16",
            "'bf16' is not one of '32-true', 'bf16-mixed', '16-mixed'. Did you mean \"bf16-mixed\"?",
        ),
    ],
)
def test_each_checked_key_says_what_is_wrong_and_the_fix_word_for_word(
    workdir: Path, capsys: pytest.CaptureFixture[str], section: str, key: str, value: object, message: str
) -> None:
    spec = write_spec(workdir, **{section: {key: value}})
    assert run_error(capsys, spec) == f"tuiloop: error: {spec}, [{section}] {key}: {message}\n"


def test_unknown_monitor_with_did_you_mean(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_error(capsys, write_spec(workdir, early_stopping={"monitor": "val_accuracy"}))
    has_all(
        err,
        "spec.toml, [early_stopping] monitor",
        "'val_accuracy' is not a metric",
        "Did you mean 'val_acc'?",
        "val_mae",
    )
    err = run_error(capsys, write_spec(workdir, checkpoint={"monitor": "loss"}))
    has_all(err, "[checkpoint] monitor", "'loss' is not a metric")


def test_a_missing_section_or_target_says_what_to_add(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_error(capsys, write_spec(workdir, loss=None))
    has_all(err, "spec.toml", "required section [loss] is missing", 'Add [loss] with target = "..."')
    text = write_spec(workdir).read_text() + "\n[scheduler]\ngamma = 0.5\n"
    err = run_error(capsys, write_spec(workdir, text=text))
    has_all(err, "spec.toml, [scheduler]", "required key 'target' is missing", 'Add target = "..." to [scheduler]')


def test_invalid_toml_names_line(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(workdir, text="[run]\nepochs = 3\nname = digits\n")
    err = run_error(capsys, spec)
    has_all(err, "spec.toml", "not valid TOML", "line 3", "strings need quotes")


def test_a_spec_file_that_does_not_exist_is_named(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_error(capsys, workdir / "nope.toml")
    has_all(err, "nope.toml", "no such spec file")


# ---- targets: names, files, modules, signatures -----------------------------------------------
@pytest.mark.parametrize(
    ("section", "target", "expected"),
    [
        (
            "optimizer",
            "Adamw",
            ["[optimizer] target", "'Adamw' is not an optimizer in torch.optim", "Did you mean 'AdamW'?"],
        ),
        ("loss", "CrossEntropy", ["[loss] target", "not a loss in torch.nn", "Did you mean 'CrossEntropyLoss'?"]),
        ("loss", "crossentropyloss", ["Did you mean 'CrossEntropyLoss'?"]),
        (
            "scheduler",
            "ReduceLROnPlateu",
            ["[scheduler] target", "not a scheduler in torch.optim.lr_scheduler", "Did you mean 'ReduceLROnPlateau'?"],
        ),
        ("optimizer", "Linear", ["'Linear' is not an optimizer"]),  # exists in torch, but is not an optimizer
        ("model", "MLP", ["[model] target", "does not say where MLP lives", '"file.py:MLP"']),
    ],
)
def test_a_target_torch_does_not_have_suggests_the_closest_name(
    workdir: Path, capsys: pytest.CaptureFixture[str], section: str, target: str, expected: list[str]
) -> None:
    spec = write_spec(workdir, **{section: {"target": target}})
    has_all(run_error(capsys, spec), "spec.toml", *expected)


def test_kwarg_not_accepted_with_did_you_mean(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_error(capsys, write_spec(workdir, model={"hiden": 8}))
    has_all(
        err,
        "spec.toml, [model] hiden",
        "'hiden' is not a parameter of tiny.py:MLP",
        "Did you mean 'hidden'?",
        "accepts: in_features, out_features, hidden",
    )
    err = run_error(capsys, write_spec(workdir, optimizer={"weight_decy": 0.1}))
    has_all(err, "[optimizer] weight_decy", "not a parameter of Adam", "Did you mean 'weight_decay'?")
    err = run_error(capsys, write_spec(workdir, data={"val_fractoin": 0.1}))
    has_all(err, "[data] val_fractoin", "not a parameter of tiny.py:classes")


def test_supplied_argument_cannot_be_set(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_error(capsys, write_spec(workdir, optimizer={"params": [1]}))
    has_all(err, "[optimizer] params", "tuiloop passes params to Adam itself", "Remove params")


def test_a_required_argument_left_out_says_how_to_add_it(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_error(capsys, write_spec(workdir, scheduler={"target": "StepLR"}))
    has_all(
        err,
        "spec.toml, [scheduler]",
        "StepLR needs 'step_size', which has no default",
        "Add step_size = ... to [scheduler]",
    )


def test_plateau_cannot_step_per_batch(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_error(capsys, write_spec(workdir, scheduler={"target": "ReduceLROnPlateau", "interval": "step"}))
    has_all(err, "[scheduler] interval", "ReduceLROnPlateau", 'Set interval = "epoch"')


def test_a_target_file_that_does_not_exist_says_where_it_was_looked_for(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = run_error(capsys, write_spec(workdir, model={"target": "tinyy.py:MLP"}))
    has_all(
        err,
        "spec.toml, [model] target",
        "no file",
        "tinyy.py",
        "relative to the spec file's folder",
        "Did you mean 'tiny.py'?",
    )


def test_a_name_missing_from_the_target_file_suggests_the_close_one(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = run_error(capsys, write_spec(workdir, model={"target": "tiny.py:MPL"}))
    has_all(err, "[model] target", "tiny.py has no attribute 'MPL'", "Did you mean 'MLP'?")


def test_a_module_that_is_not_installed_says_to_install_it_or_name_a_file(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = run_error(capsys, write_spec(workdir, model={"target": "nosuchpkg.models:MLP"}))
    has_all(err, "[model] target", "no module named 'nosuchpkg'", "Install it", '"nosuchpkg/models.py:MLP"')


def test_an_import_failing_inside_the_target_file_names_the_failing_line(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "needs_missing.py").write_text("import numpyy\n")
    err = run_error(capsys, write_spec(workdir, model={"target": "needs_missing.py:MLP"}))
    has_all(err, "[model] target", "ModuleNotFoundError", "numpyy", "needs_missing.py, line 1")


def test_a_syntax_error_in_the_target_file_names_its_file_and_line(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "broken.py").write_text("import torch\n\ndef model(:\n    pass\n")
    err = run_error(capsys, write_spec(workdir, model={"target": "broken.py:model"}))
    has_all(err, "spec.toml, [model] target", "SyntaxError", "broken.py, line 3", "--debug")


def test_a_target_that_raises_when_built_names_the_call_and_the_line(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = run_error(
        capsys,
        write_spec(
            workdir, model={"target": "tiny.py:broken_model", "in_features": 4, "out_features": None, "hidden": None}
        ),
    )
    has_all(
        err,
        "spec.toml, [model]",
        "building tiny.py:broken_model(in_features=4) raised ValueError",
        "not supported",
        "tiny.py, line",
        "--debug",
    )


def test_a_data_target_that_returns_no_pair_says_it_must_return_train_and_val(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = run_error(capsys, write_spec(workdir, data={"target": "tiny.py:not_a_pair"}))
    has_all(err, "[data] target", "must return (train, val)", "got a TensorDataset")


def test_a_device_name_that_does_not_exist_lists_the_names(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_error(capsys, write_spec(workdir), "run.device=gpu")
    has_all(err, "[run] device", "'gpu' is not a device name", "auto, cpu, cuda")


def test_cuda_on_a_machine_without_a_gpu_says_to_use_the_cpu(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    err = run_error(capsys, write_spec(workdir), "run.device=cuda")
    has_all(err, "[run] device", "no CUDA GPU", '"cpu"')


# ---- --set overrides --------------------------------------------------------------------------
def test_set_values_are_toml_and_bare_words_are_strings(workdir: Path) -> None:
    from tuiloop.spec import load_spec

    spec = load_spec(
        write_spec(workdir),
        [
            "optimizer.lr=3e-4",
            "run.device=cpu",
            "run.epochs=7",
            "data.shuffle=false",
            "model.hidden=8",
            'run.name="quoted"',
        ],
    )
    assert spec.optimizer.kwargs["lr"] == 3e-4 and isinstance(spec.optimizer.kwargs["lr"], float)
    assert spec.run.device == "cpu"
    assert spec.run.epochs == 7
    assert spec.data.shuffle is False
    assert spec.model.kwargs["hidden"] == 8
    assert spec.run.name == "quoted"
    spec = load_spec(
        write_spec(workdir), ["scheduler.target=StepLR", "scheduler.step_size=2", "early_stopping.patience=3"]
    )
    assert spec.scheduler is not None and spec.scheduler.kwargs == {"step_size": 2}
    assert spec.early_stopping is not None and spec.early_stopping.patience == 3


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("lr=3", ["--set lr=3", "section.key=value", "--set optimizer.lr=3e-4"]),
        ("optimizer.lr", ["--set optimizer.lr", "section.key=value"]),
        ("optimzer.lr=3", ["--set optimzer.lr=3", "no section [optimzer]", "Did you mean 'optimizer'?"]),
        ("run.epoch=2", ["[run] epoch (from --set run.epoch=2)", "Did you mean 'epochs'?"]),
        ("run.epochs=two", ["[run] epochs (from --set run.epochs=two)", "expected an integer, got 'two'"]),
        (
            "optimizer.weight_decy=0.1",
            ["[optimizer] weight_decy (from --set optimizer.weight_decy=0.1)", "Did you mean 'weight_decay'?"],
        ),
        ("model.target=tiny.py:MPL", ["[model] target (from --set model.target=tiny.py:MPL)", "Did you mean 'MLP'?"]),
    ],
)
def test_a_malformed_or_misspelt_set_names_the_set_and_the_fix(
    workdir: Path, capsys: pytest.CaptureFixture[str], item: str, expected: list[str]
) -> None:
    has_all(run_error(capsys, write_spec(workdir), item), *expected)


def test_a_set_word_for_a_number_says_how_it_was_read(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_error(capsys, write_spec(workdir), "optimizer.lr=abc")
    has_all(
        err,
        "[optimizer] lr (from --set optimizer.lr=abc)",
        "lr was read as the string 'abc'",
        "Adam expects a number (its default is 0.001)",
    )


def test_a_misspelt_tuiloop_key_in_a_kwargs_section_is_suggested(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = run_error(capsys, write_spec(workdir, data={"batchsize": 16}))
    has_all(
        err,
        "[data] batchsize",
        "not a parameter of tiny.py:classes",
        "Did you mean 'batch_size'?",
        "tuiloop's own keys of [data]: batch_size",
    )


def test_numpy_arrays_instead_of_datasets_are_caught_at_the_start(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "arrays.py").write_text(
        "import numpy as np\n"
        "def load():\n"
        "    x, y = np.random.rand(40, 4), np.random.randint(0, 3, 40)\n"
        "    return (x[:30], y[:30]), (x[30:], y[30:])\n"
    )
    err = run_error(capsys, write_spec(workdir, data={"target": "arrays.py:load"}))
    has_all(
        err,
        "[data] target",
        "arrays.py:load returned a tuple of 2 numpy arrays as the train split, not a Dataset",
        "TensorDataset(torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y))",
    )


# ---- the real command -------------------------------------------------------------------------
def test_real_cli_spec_error_exit_2_no_traceback(workdir: Path) -> None:
    spec = write_spec(workdir, optimizer={"target": "Adamw"})
    r = run_cli("run", spec, "--headless", cwd=workdir)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith(f"tuiloop: error: {spec}, [optimizer] target:"), r.stderr
    assert "Did you mean 'AdamW'?" in r.stderr
    assert r.stdout == ""
    assert not (workdir / "runs").exists(), "a spec error must not leave a run directory"


def test_real_cli_unknown_key_and_set_without_a_value_exit_2_without_traceback(workdir: Path) -> None:
    spec = write_spec(workdir, run={"epoch": 3})
    r = run_cli("run", spec, "--headless", cwd=workdir)
    assert r.returncode == 2 and "Did you mean 'epochs'?" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("run", write_spec(workdir), "--headless", "--set", "optimizer.lr", cwd=workdir)
    assert r.returncode == 2 and "section.key=value" in r.stderr and "Traceback" not in r.stderr


def test_real_cli_debug_shows_traceback(workdir: Path) -> None:
    (workdir / "broken.py").write_text("def model(:\n    pass\n")
    spec = write_spec(workdir, model={"target": "broken.py:model"})
    r = run_cli("run", spec, "--headless", cwd=workdir)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "SyntaxError" in r.stderr
    r = run_cli("run", spec, "--headless", "--debug", cwd=workdir)
    assert r.returncode == 2 and "Traceback" in r.stderr and "tuiloop: error:" in r.stderr


def test_real_cli_set_overrides_apply(workdir: Path) -> None:
    spec = write_spec(workdir)
    r = run_cli(
        "run",
        spec,
        "--headless",
        "--set",
        "run.epochs=1",
        "--set",
        "run.device=cpu",
        "--set",
        "optimizer.lr=3e-4",
        cwd=workdir,
    )
    assert r.returncode == 0, r.stderr
    run_dir = next((workdir / "runs").iterdir())
    saved = (run_dir / "spec.toml").read_text()
    assert "epochs = 1" in saved and 'device = "cpu"' in saved and "lr = 0.0003" in saved
    assert "after 1 epoch," in r.stdout
