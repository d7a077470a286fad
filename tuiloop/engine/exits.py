"""The exit statuses of tuiloop's processes and commands, and which one a run's ending gives."""

from __future__ import annotations

EXIT_OK = 0  # completed, early-stopped, stopped, suspended, or left running
EXIT_FAILED = 1  # the run failed in training, or its process died
EXIT_USAGE = 2  # a spec, usage or set-up error: one paragraph says what to fix
EXIT_FORCED = 130  # forced to exit without saving (a second Ctrl+C, or the force command): 128 + SIGINT


def exit_status(status: str | None, failed_at_setup: bool = False) -> int:
    """The exit status for a run that ended as ``status`` (None: it never said how it ended)."""
    if status == "forced":
        return EXIT_FORCED
    if status in ("failed", "crashed"):
        return EXIT_USAGE if failed_at_setup else EXIT_FAILED
    return EXIT_OK
