"""Whether a run directory's file system can take more writes, as the system reports it (statvfs).

A training process that dies because its disk is full or became read-only cannot say so in its
event log or its output.log (both are on that disk); a view that sees it gone asks here.
"""

from __future__ import annotations

import os
from pathlib import Path


def unwritable(path: Path) -> str:
    """'its file system is full', 'its file system is read-only', or '' (writes nothing)."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return ""
    if stat.f_flag & os.ST_RDONLY:
        return "its file system is read-only"
    if stat.f_bavail == 0:
        return "its file system is full"
    return ""
