"""Each spec key is declared once (tuiloop/spec/schema.py); the schema, its defaults, the checks,
the engine's Options and what a resume may change all follow from that one declaration."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from conftest import REPO, write_spec

from tuiloop.engine.options import Options
from tuiloop.runner import resume
from tuiloop.runner.build import build_trainer
from tuiloop.spec import SpecError, load_spec, resolve
from tuiloop.spec.schema import SCHEMA

DECLARED = [k for keys in SCHEMA.values() for k in keys.values()]
# Options fields that the spec sets from several keys at once (in runner/build.py), not from one key.
FROM_SEVERAL_KEYS = {"monitor", "mode", "early_stopping"}


def test_run_log_interval_goes_from_its_declaration_to_the_schema_the_checks_options_and_resume(
    workdir: Path,
) -> None:
    declared = SCHEMA["run"]["log_interval"]
    assert (declared.types, declared.default, declared.option, declared.resume) == (
        (int, float),
        Options().log_interval,  # the spec's default is the engine's
        "log_interval",
        True,
    )

    # validated as declared: a positive number of seconds
    with pytest.raises(SpecError, match=r"\[run\] log_interval: must be a positive number of seconds"):
        load_spec(write_spec(workdir, run={"log_interval": 0}))
    with pytest.raises(SpecError, match=r"\[run\] log_interval: expected a number, got 'fast'"):
        load_spec(write_spec(workdir, run={"log_interval": "fast"}))

    # from the TOML to the loop's Options, an integer made a float on the way; left out, the default
    spec = load_spec(write_spec(workdir, run={"log_interval": 2}))
    assert spec.run.log_interval == 2.0 and isinstance(spec.run.log_interval, float)
    assert build_trainer(resolve(spec)).opt.log_interval == 2.0
    assert build_trainer(resolve(load_spec(write_spec(workdir, run={"log_interval": None})))).opt.log_interval == 0.25

    # known to resume: a change is allowed and reported, one to a key declared without resume is refused
    assert "log_interval" in resume.MUTABLE["run"]
    old, new = spec.raw, load_spec(write_spec(workdir, run={"log_interval": 60})).raw
    assert resume.changes(old, new, "--resume RUN") == [("run", "log_interval", 2, 60)]
    with pytest.raises(SpecError, match=r"\[run\] seed: it changed from 0 to 1, and it cannot change on resume"):
        resume.changes(old, load_spec(write_spec(workdir, run={"log_interval": 2, "seed": 1})).raw, "--resume RUN")


def test_every_options_field_is_set_by_a_declared_key_or_from_several_keys() -> None:
    fed = [k.option for k in DECLARED if k.option]
    assert len(fed) == len(set(fed)), "two keys feed the same Options field"
    assert set(fed) | FROM_SEVERAL_KEYS == {f.name for f in dataclasses.fields(Options)}
    assert not set(fed) & FROM_SEVERAL_KEYS


def test_a_spec_builds_options_with_the_python_apis_defaults(workdir: Path) -> None:
    spec = load_spec(write_spec(workdir, run={"name": None, "epochs": None, "log_interval": None}))
    options = spec.loop_options()
    defaults = Options()
    assert options.pop("run_name") == "spec"  # the spec file's stem
    assert options == {k: getattr(defaults, k) for k in options}
    assert "scheduler_interval" not in options  # no [scheduler]: the engine's own default stands


def test_every_declared_key_has_one_line_of_help_and_is_in_the_spec_reference() -> None:
    docs = "\n".join(p.read_text(encoding="utf-8") for p in [REPO / "README.md", *(REPO / "docs").glob("*.md")])
    for k in DECLARED:
        assert k.help and "\n" not in k.help, (k.section, k.name)
        assert re.search(rf"\b{k.name} = ", docs), f"[{k.section}] {k.name} is not in the spec reference"
