"""The README and the docs/ pages: their Python examples run as written (from a scratch directory,
on the bundled demo), and what they state about the code (keys, spec defaults, the screenshot,
the set-up commands, links) matches it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import DEMOS

from tuiloop import execute, load_spec

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_LIMIT = 15_000  # characters: the tour stays short, the reference lives in docs/

FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def code_blocks(page: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


def python_blocks() -> list[tuple[Path, str]]:
    """Every ```python block of the README and of the docs/ pages, with its page."""
    return [(page, block) for page in PAGES for block in code_blocks(page, "python")]


def prose(page: Path) -> str:
    """The page without its fenced code blocks and inline code (neither holds links or headings)."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return re.sub(r"`[^`]+`", "", text)


def links(page: Path) -> list[str]:
    return LINK.findall(prose(page))


def anchors(page: Path) -> set[str]:
    """The fragment GitHub gives each heading of a page (lower case, punctuation dropped, spaces as -)."""
    out: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", FENCE.sub("", page.read_text(encoding="utf-8")), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = 0
        while (slug if n == 0 else f"{slug}-{n}") in out:
            n += 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def check_load_checkpoint(namespace: dict, out: str, tmp_path: Path) -> None:
    assert namespace["model"](torch.zeros(1, 64)).shape == (1, 10)


def check_run_spec(namespace: dict, out: str, tmp_path: Path) -> None:
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and out.rstrip().splitlines()[-1] == f"0 {runs[0]}", out[-2000:]
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert (summary["status"], summary["epochs_done"]) == ("completed", 2)
    assert (runs[0] / "checkpoints" / "best.pt").is_file()


def check_execute(namespace: dict, out: str, tmp_path: Path) -> None:
    assert "Finished(" in out, out[-2000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "summary.json").is_file() and (runs[0] / "checkpoints" / "best.pt").is_file()
    assert out.rstrip().splitlines()[-1] == f"0 {runs[0]}"


def check_trainer(namespace: dict, out: str, tmp_path: Path) -> None:
    assert "Finished(" in out, out[-2000:]
    assert out.rstrip().splitlines()[-1].startswith(("completed ", "early_stopped "))
    run_dir = tmp_path / "runs" / "from-python"
    assert {"run.json", "events.jsonl", "summary.json"} <= {p.name for p in run_dir.iterdir()}


def check_track(namespace: dict, out: str, tmp_path: Path) -> None:
    assert out.rstrip().splitlines()[-1].startswith("completed "), out[-2000:]
    run_dir = tmp_path / "runs" / "my-loop"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["epochs_done"], summary["steps"]) == ("completed", 5, 65)
    assert json.loads((run_dir / "run.json").read_text())["config"] == {"lr": 1e-3, "batch_size": 32}
    assert (run_dir / "checkpoints" / "best.pt").is_file() and not (run_dir / "control.sock").exists()
    kinds = [json.loads(line)["event"] for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert kinds[0] == "run_started" and kinds.count("validated") == 5 and kinds[-1] == "finished"


def check_tour(namespace: dict, out: str, tmp_path: Path) -> None:
    assert out.rstrip().splitlines()[-1].startswith("completed "), out[-2000:]
    run_dir = tmp_path / "runs" / "tour"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["epochs_done"], summary["steps"]) == ("completed", 5, 70)
    assert (run_dir / "run.json").is_file() and not (run_dir / "control.sock").exists()
    kinds = [json.loads(line)["event"] for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert kinds[0] == "run_started" and kinds.count("validated") == 5 and kinds[-1] == "finished"


def check_hf_trainer(namespace: dict, out: str, tmp_path: Path) -> None:
    (run_dir,) = list((tmp_path / "runs").iterdir())  # run_dir=None: a fresh one under ./runs
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["epochs_done"], summary["steps"]) == ("completed", 2, 16), summary
    assert json.loads((run_dir / "run.json").read_text())["config"]["logging_steps"] == 2
    kinds = [json.loads(line)["event"] for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert kinds[0] == "run_started" and kinds.count("train_steps") == 8 and kinds.count("validated") == 2
    assert kinds[-1] == "finished" and not (run_dir / "control.sock").exists()


def check_lightning(namespace: dict, out: str, tmp_path: Path) -> None:
    (run_dir,) = list((tmp_path / "runs").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["epochs_done"], summary["steps"]) == ("completed", 2, 16), summary
    assert json.loads((run_dir / "run.json").read_text())["config"]["hparams"] == {"lr": 0.05}
    kinds = [json.loads(line)["event"] for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert kinds[0] == "run_started" and kinds.count("validated") == 2 and kinds.count("checkpoint") == 2
    assert kinds[-1] == "finished" and not (run_dir / "control.sock").exists()


# Each Python block, told apart by a line only it has: the page that holds it, and what running it must give.
CHECKS: dict[str, tuple[str, Callable[[dict, str, Path], None]]] = {
    'ckpt = torch.load("runs/digits-mlp-...': ("docs/rundir.md", check_load_checkpoint),
    'tuiloop.run_spec("demos/digits.toml"': ("docs/python.md", check_run_spec),
    "code, run_dir = tuiloop.execute(spec": ("docs/python.md", check_execute),
    "Batches(train_ds, device, batch_size=64": ("docs/python.md", check_trainer),
    '"runs/my-loop", config=': ("docs/python.md", check_track),
    'with tuiloop.track("runs/tour"': ("README.md", check_tour),
    "callbacks=[TuiloopCallback()],": ("docs/integrations.md", check_hf_trainer),
    'L.Trainer(max_epochs=2, accelerator="cpu"': ("docs/integrations.md", check_lightning),
}


def test_every_python_block_is_checked() -> None:
    """Every ```python block of the README and of docs/ has exactly one check, on the page it names."""
    blocks = python_blocks()
    assert [sum(marker in block for marker in CHECKS) for _, block in blocks] == [1] * len(blocks)
    assert len(blocks) == len(CHECKS)
    for page, block in blocks:
        (marker,) = [m for m in CHECKS if m in block]
        assert name(page) == CHECKS[marker][0], f"{marker!r} is on {name(page)}, not {CHECKS[marker][0]}"


@pytest.mark.parametrize("marker", list(CHECKS))
def test_python_example_runs(
    marker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ((page, code),) = [(page, block) for page, block in python_blocks() if marker in block]
    check = CHECKS[marker][1]
    if check is check_hf_trainer:
        pytest.importorskip("transformers", reason="transformers is not installed (it is in the [test] extra)")
        pytest.importorskip("accelerate", reason="accelerate is not installed (it is in the [test] extra)")
    if check is check_lightning:
        pytest.importorskip("lightning", reason="lightning is not installed (it is in the [test] extra)")
    monkeypatch.chdir(tmp_path)
    code = code.replace('"demos/digits.toml"', repr(str(DEMOS / "digits.toml")))
    if check is check_load_checkpoint:  # loading a checkpoint: make one with the real demo first
        spec = load_spec(DEMOS / "digits.toml", ["run.epochs=2", f"run.out_dir={tmp_path / 'made'}"])
        _, run_dir = execute(spec, handle_signals=False)
        code = code.replace('"runs/digits-mlp-.../checkpoints/best.pt"', repr(str(run_dir / "checkpoints" / "best.pt")))
        monkeypatch.syspath_prepend(str(DEMOS))
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(code, f"{name(page)} python block {marker!r}", "exec"), namespace)
    check(namespace, capsys.readouterr().out, tmp_path)


def test_the_keys_table_lists_every_key_of_the_monitor() -> None:
    """Each key the monitor binds (and its ``?`` list) has a row in the keys table of docs/commands.md."""
    from tuiloop.tui.app import MonitorApp

    table = (DOCS / "commands.md").read_text(encoding="utf-8").split("| key | |", 1)[1].split("\n\n", 1)[0]
    keys = {b.key_display or b.key for b in MonitorApp.BINDINGS if b.show}
    missing = [k for k in keys if f"`{k}`" not in table]
    assert not missing, f"keys missing from the table in docs/commands.md: {missing}"


def test_the_spec_reference_shows_every_key_with_its_default() -> None:
    """docs/spec.md's reference block has every section and key of the schema; a key with a default
    shows that value, a key without one (None: it follows another) is written as a comment."""
    from tuiloop.spec.load import tomllib  # tomli on Python 3.10
    from tuiloop.spec.schema import REQUIRED, SCHEMA

    (block,) = [b for b in code_blocks(DOCS / "spec.md", "toml") if b.startswith("[run]")]
    data = tomllib.loads(block)
    headers = re.findall(r"^\[(\w+)\]", block, flags=re.M)
    sections = dict(zip(headers, re.split(r"^\[\w+\].*$", block, flags=re.M)[1:], strict=True))
    assert set(data) == set(SCHEMA) == set(headers) and len(headers) == len(SCHEMA)
    for section, keys in SCHEMA.items():
        for key, declared in keys.items():
            default = declared.default
            where = f"[{section}] {key}"
            if default is None:
                assert key not in data[section], f"{where} has no fixed default: write it as a comment"
                assert re.search(rf"^# {key} = ", sections[section], flags=re.M), f"{where} is missing"
            elif default is REQUIRED:
                assert key in data[section], f"{where} is missing"
            else:
                assert data[section].get(key, "missing") == default, f"{where}: the default is {default!r}"


def test_every_toml_block_is_valid_toml() -> None:
    from tuiloop.spec.load import tomllib  # tomli on Python 3.10

    for page in PAGES:
        for block in code_blocks(page, "toml"):
            tomllib.loads(block)


def test_the_readme_spec_is_the_digits_demo_as_shipped() -> None:
    (block,) = code_blocks(README, "toml")
    assert block == (DEMOS / "digits.toml").read_text(encoding="utf-8")


def test_the_readme_shows_the_screenshot() -> None:
    shot = (DOCS / "screenshot.txt").read_text(encoding="utf-8")
    assert f"```text\n{shot}```" in README.read_text(encoding="utf-8")


def test_the_readme_test_command_is_the_one_ci_runs() -> None:
    """The set-up's test command, verbatim, is a line of .ci/run."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    (command,) = [b.strip() for b in code_blocks(README, "bash") if "pytest" in b]
    assert command == ".venv/bin/python -m pytest -q" and command in ci


def test_the_readme_is_short() -> None:
    size = len(README.read_text(encoding="utf-8"))
    assert size <= README_LIMIT, f"README.md is {size} characters; move reference material to docs/"


def test_the_readme_links_every_docs_page() -> None:
    linked = {target.split("#", 1)[0] for target in links(README)}
    missing = [f"docs/{page.name}" for page in DOCS.glob("*.md") if f"docs/{page.name}" not in linked]
    assert not missing, f"README.md does not link {missing}"


def test_every_relative_link_points_to_a_file_that_exists() -> None:
    broken = []
    for page in PAGES:
        for target in links(page):
            path = target.split("#", 1)[0]
            if re.match(r"[a-z]+:", target) or not path:
                continue
            if not (page.parent / path).exists():
                broken.append(f"{name(page)}: {target}")
    assert not broken, f"links to files that do not exist: {broken}"


def test_every_link_to_a_section_names_a_heading() -> None:
    broken = []
    for page in PAGES:
        for target in links(page):
            if re.match(r"[a-z]+:", target) or "#" not in target:
                continue
            path, fragment = target.split("#", 1)
            linked = (page.parent / path) if path else page
            if linked.suffix == ".md" and linked.exists() and fragment not in anchors(linked):
                broken.append(f"{name(page)}: {target}")
    assert not broken, f"links to headings that do not exist: {broken}"
