"""``tuiloop run SCRIPT.py ARGS``: where tuiloop's options end and the script's arguments begin."""

from __future__ import annotations

import argparse


def split_script(argv: list[str], parser: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """``run [OPTIONS] SCRIPT.py ARGS``: tuiloop's part (up to the script) and the script's arguments,
    as torchrun takes them: everything after the script is the script's. A spec keeps them all."""
    run = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["run"]
    takes_value = {o for a in run._actions if a.nargs != 0 for o in a.option_strings}
    i = 1
    while i < len(argv):
        word = argv[i]
        if word == "--":
            return argv, []
        if not word.startswith("-") or word == "-":
            return (argv[: i + 1], argv[i + 1 :]) if word.endswith(".py") else (argv, [])
        i += 2 if word in takes_value else 1  # --opt=value is one word
    return argv, []
