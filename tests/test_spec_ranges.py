"""Every number of a spec is checked for range and finiteness, and run names follow the documented
rule exactly: through the real spec loader (the CLI's ``main()`` in-process, as in
test_spec_errors.py), one paragraph naming the file and the key, exit status 2, no run directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli, write_spec
from test_spec_errors import cli_error

NAN, INF = float("nan"), float("inf")
INT64 = "from -9223372036854775808 to 9223372036854775807"
RULE = "Use letters, digits, '-', '_' and '.', not starting with '.' (for example name = \"digits-mlp\"); put runs elsewhere with out_dir."


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        # an integer torch cannot take as a seed (torch.manual_seed: 64 bits)
        ("run", "seed", 2**64, f"must be a 64-bit integer, {INT64}, got {2**64}. For example seed = 0."),
        ("run", "seed", -(2**63) - 1, f"must be a 64-bit integer, {INT64}, got {-(2**63) - 1}. For example seed = 0."),
        ("run", "epochs", 10**20, f"must be a 64-bit integer, {INT64}, got {10**20}. For example epochs = 10."),
        ("run", "log_interval", NAN, "must be a finite number, got nan. For example log_interval = 0.25."),
        ("run", "log_interval", INF, "must be a finite number, got inf. For example log_interval = 0.25."),
        ("run", "val_every", 2**63, f"must be a 64-bit integer, {INT64}, got {2**63}. For example val_every = 1."),
        ("data", "batch_size", 2**70, f"must be a 64-bit integer, {INT64}, got {2**70}. For example batch_size = 32."),
        ("early_stopping", "min_delta", NAN, "must be a finite number, got nan. For example min_delta = 0.0."),
        ("early_stopping", "min_delta", INF, "must be a finite number, got inf. For example min_delta = 0.0."),
        (
            "early_stopping",
            "patience",
            2**63,
            f"must be a 64-bit integer, {INT64}, got {2**63}. For example patience = 5.",
        ),
        ("train", "gradient_clip_val", INF, "must be a finite number, got inf. For example gradient_clip_val = 0.0."),
        ("train", "gradient_clip_val", -INF, "must be a finite number, got -inf. For example gradient_clip_val = 0.0."),
        (
            "checkpoint",
            "every_n_epochs",
            2**63,
            f"must be a 64-bit integer, {INT64}, got {2**63}. For example every_n_epochs = 0.",
        ),
        # the numbers of torch's own objects, given as keyword arguments of their targets
        (
            "optimizer",
            "lr",
            NAN,
            "must be a finite number, got nan. nan and inf have no meaning as a setting of [optimizer]; write a number, such as lr = 0.001.",
        ),
        (
            "optimizer",
            "lr",
            INF,
            "must be a finite number, got inf. nan and inf have no meaning as a setting of [optimizer]; write a number, such as lr = 0.001.",
        ),
        (
            "optimizer",
            "betas",
            [0.9, NAN],
            "must be a finite number, got [0.9, nan]. nan and inf have no meaning as a setting of [optimizer]; write a number, such as lr = 0.001.",
        ),
        (
            "loss",
            "label_smoothing",
            INF,
            "must be a finite number, got inf. nan and inf have no meaning as a setting of [loss]; write a number, such as lr = 0.001.",
        ),
        # names: letters, digits, '-', '_' and '.', not starting with '.'
        *[
            ("run", "name", name, f"{name!r} {bad}, and the name becomes the run directory's folder name. {RULE}")
            for name, bad in [
                ("my run", "contains a space"),
                (".", "is the name of a folder's own entry"),
                ("..", "is the name of a folder's parent entry"),
                (".hidden", "starts with '.'"),
                ("a:b", "contains ':'"),
                ("a/b", "contains a path separator"),
                ("tab\there", "contains a control character"),
                ("", "is empty"),
            ]
        ],
    ],
)
def test_each_number_and_name_out_of_range_gives_one_paragraph_naming_the_key(
    workdir: Path, capsys: pytest.CaptureFixture[str], section: str, key: str, value: object, message: str
) -> None:
    extra = {"scheduler": {"target": "StepLR", "step_size": 1}} if section == "scheduler" else {}
    spec = write_spec(workdir, **{section: {key: value}}, **extra)  # type: ignore[arg-type]
    err = cli_error(capsys, "run", spec, "--headless")
    assert err == f"tuiloop: error: {spec}, [{section}] {key}: {message}\n"
    assert not (workdir / "runs").exists()


def test_a_scheduler_setting_that_is_not_finite_is_refused(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(workdir, scheduler={"target": "StepLR", "step_size": 1, "gamma": NAN})
    err = cli_error(capsys, "run", spec, "--headless")
    assert err.startswith(f"tuiloop: error: {spec}, [scheduler] gamma: must be a finite number, got nan.")


def test_the_error_names_the_set_that_gave_the_value_the_last_one_when_repeated(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(workdir)
    err = cli_error(capsys, "run", spec, "--headless", "--set", "run.log_interval=0.5", "--set", "run.log_interval=inf")
    assert "[run] log_interval (from --set run.log_interval=inf): must be a finite number" in err, err


def test_a_spec_file_whose_name_is_no_run_name_gives_runs_a_valid_one(workdir: Path) -> None:
    """The default name is the spec file's stem, made a valid name: 'my spec.toml' runs as my-spec."""
    spec = write_spec(workdir, name="my spec.toml", run={"name": None, "epochs": 1})
    done = run_cli("run", spec, "--headless", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert [p.name.rsplit("-", 3)[0] for p in (workdir / "runs").iterdir()] == ["my-spec"]


def test_a_run_name_too_long_for_the_file_system_is_refused_before_the_data_loads(workdir: Path) -> None:
    import shutil

    shutil.copy(Path(__file__).parent / "fixtures" / "disk_user.py", workdir)
    marker = workdir / "data-loaded"
    spec = write_spec(
        workdir, run={"name": "n" * 240}, data={"target": "disk_user.py:marked_classes", "marker": str(marker)}
    )
    done = run_cli("run", spec, "--headless", cwd=workdir)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr == (
        f"tuiloop: error: {spec}, [run] name: the run directory's name would be 261 bytes "
        f"(nnnnnnnnnnnnnnnnnnnn...-YYYYmmdd-HHMMSS-xxxx), and the file system of {workdir} takes at most 255. "
        "Use a name of at most 234 bytes.\n"
    )
    assert not marker.exists(), "the data was loaded before the name was checked"
    assert not (workdir / "runs").exists()
