"""The run's own output, read incrementally: what the user's code prints and warns (the training
process's ``output.log``) and, in a distributed run, the other ranks' ``ranks/rank-N.log``."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text

from tuiloop.rundir.layout import OUTPUT, RANKS

FIRST_READ = 4 << 20  # a long output is read from its last 4 MiB on: the pane keeps 10,000 lines anyway


class _File:
    def __init__(self, path: Path, label: str) -> None:
        self.path, self.label = path, label
        self.offset: int | None = None
        self.partial = b""

    def read(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, 2)
                if self.offset is None or size < self.offset:  # first read, or the file was replaced
                    self.offset = max(size - FIRST_READ, 0)
                    self.partial = b""
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return []
        self.offset += len(chunk)
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        return [line.decode("utf-8", errors="replace") for line in lines]


class OutputTail:
    """New lines of the run's output files since the last poll, as Rich text (ANSI colours kept,
    a progress bar's carriage returns reduced to what the terminal would show last)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._files: dict[Path, _File] = {}

    def _find(self) -> list[_File]:
        paths = [(self.run_dir / OUTPUT, "")]
        paths += [(p, f"[{p.stem.replace('-', ' ')}] ") for p in sorted((self.run_dir / RANKS).glob("rank-*.log"))]
        for path, label in paths:
            if path not in self._files:
                self._files[path] = _File(path, label)
        return list(self._files.values())

    def poll(self) -> list[Text]:
        out = []
        for f in self._find():
            for line in f.read():
                line = line.rstrip("\r").rsplit("\r", 1)[-1]
                text = Text.from_ansi(line)  # the pane wraps it
                if f.label:
                    text = Text(f.label, style="dim") + text
                out.append(text)
        return out
