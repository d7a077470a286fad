"""A live run that writes nothing: frozen, judged from outside.

A process stopped with SIGSTOP, or stuck in a C call that holds the GIL, cannot say it is stuck:
its own stall watch does not run. But a live run's machine sampler writes a line to the event
log every 2 s, so a run that has written nothing for :data:`FROZEN_S` seconds while its log holds
samples (sampling is on) is frozen, and ``ls`` and the monitor show it as stalled until it
writes again.
"""

from __future__ import annotations

import os

FROZEN_S = float(os.environ.get("TUILOOP_FROZEN_S") or 30.0)  # 15 samples missed


def frozen_for(last_time: float | None, sampled: bool, now: float) -> float | None:
    """Seconds a live, running run has written nothing although it samples the machine every
    2 s; None while it has not been :data:`FROZEN_S`, or when it does not sample."""
    if not sampled or last_time is None or now - last_time < FROZEN_S:
        return None
    return now - last_time
