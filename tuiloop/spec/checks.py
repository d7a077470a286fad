"""Checks of single key values that a type, a list of choices or a lowest value cannot say.

Each takes ``where`` (``"spec.toml, [run] name"``) and the value, and raises :class:`SpecError`.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from typing import Any

from tuiloop.spec.errors import SpecError, did_you_mean, join_fix

# Every metric the engine can report (tuiloop.engine.problem.metric_names); monitors must name one.
METRICS = ("train_loss", "val_loss", "val_acc", "val_mae", "val_ppl")

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


# What torch (torch.manual_seed) and TOML take as an integer: a signed 64-bit one.
INT64 = (-(2**63), 2**63 - 1)
NAME_CHARACTERS = "letters, digits, '-', '_' and '.'"


def number(where: str, value: int | float, fix: str) -> None:
    """Every number key: a float is finite (no nan or inf), an integer fits in 64 bits."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(where, f"must be a finite number, got {value}", fix)
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        raise SpecError(where, f"must be a 64-bit integer, from {INT64[0]} to {INT64[1]}, got {value}", fix)


def finite_kwargs(where: str, section: str, kwargs: dict[str, Any]) -> None:
    """The numbers among a torch target's keyword arguments (lr, betas, ...) are finite."""
    for name, value in kwargs.items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise SpecError(
                    f"{where}, [{section}] {name}",
                    f"must be a finite number, got {value}",
                    f"nan and inf have no meaning as a setting of [{section}]; write a number, such as lr = 0.001.",
                )


def _bad_character(name: str) -> str:
    for ch in name:
        if ch in "/\\" or ch == os.sep:
            return "contains a path separator"
        if not ch.isprintable():
            return "contains a control character"
        if ch.isspace():
            return "contains a space"
        if not (ch.isalnum() or ch in "-_."):
            return f"contains {ch!r}"
    return ""


def run_name(where: str, name: str) -> None:
    """A run's name becomes part of a folder name: letters, digits, '-', '_' and '.', not
    starting with '.' (a hidden folder; '.' and '..' are the folder itself and its parent)."""
    if not name.strip():
        bad = "is empty"
    else:
        dots = {".": "is the name of a folder's own entry", "..": "is the name of a folder's parent entry"}
        bad = _bad_character(name) or dots.get(name) or ("starts with '.'" if name.startswith(".") else "")
    if bad:
        raise SpecError(
            where,
            f"{name!r} {bad}, and the name becomes the run directory's folder name",
            f"Use {NAME_CHARACTERS}, not starting with '.' (for example name = \"digits-mlp\"); put runs elsewhere with out_dir.",
        )


def default_run_name(stem: str) -> str:
    """The name of a run whose spec gives none: its file's stem, made a valid name ('my spec' -> 'my-spec')."""
    name = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in stem).lstrip(".")
    return name or "run"


def nproc(where: str, value: int | str) -> None:
    """A number of processes, or "auto"."""
    if (isinstance(value, str) and value != "auto") or (isinstance(value, int) and value < 1):
        raise SpecError(
            where,
            f'must be a number of processes (1 or more) or "auto", got {value!r}',
            'For example nproc_per_node = 4, or "auto" for one per visible GPU.',
        )


# Metrics users ask for by name that tuiloop does not report by itself: how to add each under [metrics].
KNOWN = {
    "f1": '"torchmetrics.classification:BinaryF1Score"',
    "auroc": '"torchmetrics.classification:BinaryAUROC"',
    "auc": '"torchmetrics.classification:BinaryAUROC"',
    "roc_auc": '"torchmetrics.classification:BinaryAUROC"',
    "ap": '"torchmetrics.classification:BinaryAveragePrecision"',
    "average_precision": '"torchmetrics.classification:BinaryAveragePrecision"',
    "precision": '"torchmetrics.classification:BinaryPrecision"',
    "recall": '"torchmetrics.classification:BinaryRecall"',
    "mcc": '"torchmetrics.classification:BinaryMatthewsCorrCoef"',
    "top5": '{ target = "torchmetrics.classification:MulticlassAccuracy", num_classes = 100, top_k = 5 }',
    "top_5": '{ target = "torchmetrics.classification:MulticlassAccuracy", num_classes = 100, top_k = 5 }',
    "r2": '"torchmetrics.regression:R2Score"',
    "rmse": '{ target = "torchmetrics.regression:MeanSquaredError", squared = false }',
    "mse": '"torchmetrics.regression:MeanSquaredError"',
}
# Other words for tuiloop's own metrics: the same kind, so a did-you-mean may propose them.
SYNONYMS = {"accuracy": "acc", "perplexity": "ppl", "mean_absolute_error": "mae", "l1": "mae"}


def split_name(name: str) -> tuple[str, str]:
    """'val_f1' -> ('val_', 'f1'); a name without a known prefix -> ('', name)."""
    for prefix in ("val_", "train_", "test_"):
        if name.startswith(prefix):
            return prefix, name[len(prefix) :]
    return "", name


def monitorable(user: list[str] | tuple[str, ...]) -> list[str]:
    """Every metric a monitor may name: tuiloop's own (some reported only for a kind of problem) and val_<name> of [metrics]."""
    return [*METRICS, *(f"val_{n}" for n in user)]


def close_metric(value: str, names: list[str]) -> str:
    """The reported metric ``value`` is a misspelling of, or '': a did-you-mean that never proposes
    a metric of another kind (val_f1 is not val_mae): the names must agree but for a typo."""
    prefix, stem = split_name(value.lower())
    if (synonym := prefix + SYNONYMS.get(stem, stem)) in names:
        return synonym
    best, score = "", 0.0
    for name in names:
        p, s = split_name(name)
        ratio = difflib.SequenceMatcher(None, stem, s).ratio() if p == prefix else 0.0
        whole = difflib.SequenceMatcher(None, value.lower(), name).ratio()
        r = max(ratio if ratio >= 0.75 else 0.0, whole if whole >= 0.9 else 0.0)
        if r > score:
            best, score = name, r
    return best


def monitor(where: str, value: str, user: list[str] | tuple[str, ...]) -> None:
    """A monitor names a metric the run can report: tuiloop's own, or one of [metrics]."""
    names = monitorable(user)
    if value in names:
        return
    listed = ", ".join(names)
    close = close_metric(value, names)
    if close:
        fix = f"Did you mean '{close}'? The run can report {listed}."
    else:
        prefix, stem = split_name(value)
        example = KNOWN.get(stem.lower())
        if example is not None:
            fix = (
                f"No metric named {stem!r} is configured: add it under [metrics] as {stem} = {example} "
                f"(pip install 'tuiloop[metrics]'), and it is reported as val_{stem}. The run can report {listed}."
            )
        else:
            fix = (
                f"Use one of {listed} (val_acc for classification, val_mae for regression, val_ppl for a cross-entropy), "
                "or add the metric under [metrics] and monitor val_<name>."
            )
    raise SpecError(where, f"{value!r} is not a metric this run reports", fix)


METRIC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def metric_name(where: str, name: str) -> None:
    """A [metrics] name: an identifier, and not one of tuiloop's own (val_loss, val_acc, ...)."""
    if not METRIC_NAME.fullmatch(name):
        raise SpecError(
            where,
            f"{name!r} is not a usable metric name (it is reported as val_{name})",
            "Use letters, digits and _, starting with a letter, e.g. f1 or top5.",
        )
    if name in ("loss", "acc", "mae", "ppl"):
        raise SpecError(
            where,
            f"val_{name} is one of tuiloop's own metrics, so [metrics] cannot name another {name!r}",
            f"Give it another name, e.g. my_{name}.",
        )


def compile_mode(where: str, value: bool | str) -> None:
    """``compile`` is true, false or a torch.compile mode."""
    if isinstance(value, str) and value not in COMPILE_MODES:
        raise SpecError(
            where,
            f"{value!r} is not a torch.compile mode",
            join_fix(
                did_you_mean(value, COMPILE_MODES), f"Use true, false, or one of {', '.join(map(repr, COMPILE_MODES))}."
            ),
        )


# [notify]: the events a notice can tell, and those told by default.
NOTIFY_EVENTS = ("finished", "failed", "stalled", "nan", "best")
NOTIFY_DEFAULT = ("finished", "failed", "stalled")
APPRISE_MISSING = "pip install 'tuiloop[notify]' (Apprise), or tell yourself with command = \"...\" instead"


def notify_events(where: str, value: list[Any]) -> None:
    """[notify] on: names of events, each one of :data:`NOTIFY_EVENTS`."""
    for name in value:
        if name not in NOTIFY_EVENTS:
            raise SpecError(
                where,
                f"{name!r} is not an event a notice tells",
                join_fix(did_you_mean(str(name), NOTIFY_EVENTS), f"Events: {', '.join(NOTIFY_EVENTS)}."),
            )


def notify_command(where: str, value: str) -> None:
    """[notify] command: a shell command line, not empty."""
    if not value.strip():
        raise SpecError(
            where,
            "the command is empty",
            'Write a shell command, e.g. command = "notify-send tuiloop", or leave it out.',
        )


def notify_urls(where: str, value: list[Any]) -> None:
    """[notify] urls: strings Apprise knows; Apprise must be installed (an optional extra)."""
    for url in value:
        if not isinstance(url, str) or "://" not in url:
            raise SpecError(
                where, f"{url!r} is not a service URL", 'Write URLs as Apprise does, e.g. urls = ["ntfy://my-topic"].'
            )
    if not value:
        return
    try:
        import apprise  # lazy: an optional extra, loaded only by a spec that names URLs
    except ImportError:
        raise SpecError(where, "sending to URLs needs Apprise, which is not installed", APPRISE_MISSING) from None
    for url in value:
        if apprise.Apprise.instantiate(url) is None:
            raise SpecError(
                where,
                f"Apprise does not understand {url!r}",
                "Check the URL's scheme and form: https://github.com/caronc/apprise/wiki lists the services.",
            )
