"""``tuiloop eval RUN``: a run's checkpoint evaluated on its validation or test split, printed.

Exit status: 0 evaluated; 2 no such run, or a refusal (no such checkpoint or split, a damaged
checkpoint, a spec edit that does not fit); 1 the user's code raised while evaluating.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import traceback

from tuiloop.cli.say import error
from tuiloop.engine import fmt
from tuiloop.engine.exits import EXIT_FAILED, EXIT_USAGE
from tuiloop.rundir.catalog import RunNotFound, resolve_run
from tuiloop.runner.evaluate import SPLIT_NAMES, EvalFailed, Evaluation, evaluate_run
from tuiloop.spec.resolve import describe_exception


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate, then print the metrics (one JSON object with ``--json``)."""
    try:
        run_dir = resolve_run(args.run, args.out_dir)
    except RunNotFound as e:
        error(str(e))
        return EXIT_USAGE
    try:
        with contextlib.redirect_stdout(sys.stderr):  # what the user's code prints stays off the result
            result = evaluate_run(run_dir, args.checkpoint, args.split, args.overrides)
    except EvalFailed as e:
        if args.debug:
            traceback.print_exc()
        cause = e.__cause__ or e
        error(f"{e} raised {describe_exception(cause)}; pass --debug for the traceback")
        return EXIT_FAILED
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print_evaluation(result)
    return 0


def print_evaluation(r: Evaluation) -> None:
    """'checkpoints/best.pt (epoch 3, step 24) on the test split, 41 samples', then a metric a line."""
    at = f" (epoch {r.epoch}, step {r.step})" if r.epoch is not None else ""
    samples = f", {fmt.plural(r.samples, 'sample')}" if r.samples is not None else ""
    print(f"{r.checkpoint}{at} on the {SPLIT_NAMES[r.split]} split{samples}")
    width = max((len(name) for name in r.metrics), default=0)
    for name, value in r.metrics.items():
        print(f"  {name:<{width}}  {fmt.value(value)}")
