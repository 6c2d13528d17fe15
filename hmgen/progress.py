"""The one progress bar: rich, on stderr, shown only when stderr is a terminal and the user did not ask for
quiet; otherwise every call does nothing, so callers never test whether it is there. stdout stays clean."""
from __future__ import annotations

import sys


class Bar:
    """`with Bar("eval", quiet) as bar: bar.update(done, total, note="...")`. `total=None`: unknown yet.
    `unit="bytes"` shows sizes and speed instead of a count. `keep=True` leaves the last bar on screen."""

    def __init__(self, label: str, quiet: bool = False, total: float | None = None, done: float = 0,
                 unit: str = "items", keep: bool = False):
        self.progress = None
        if quiet or not sys.stderr.isatty():
            return
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)
        counts = (DownloadColumn(), TransferSpeedColumn()) if unit == "bytes" else (MofNCompleteColumn(),)
        self.progress = Progress(TextColumn(f"[bold]{label}"), BarColumn(), *counts, TimeRemainingColumn(),
                                 TextColumn("{task.fields[note]}"), console=Console(stderr=True), transient=not keep)
        self.progress.start()
        self.task = self.progress.add_task(label, total=total, completed=done, note="")

    def update(self, done: float, total: float | None = None, note: str | None = None) -> None:
        if self.progress is not None:
            extra = {} if note is None else {"note": note}
            self.progress.update(self.task, completed=done, **({"total": total} if total is not None else {}), **extra)

    def print(self, text: str) -> None:
        """A line above the bar (nothing when the bar is off)."""
        if self.progress is not None:
            self.progress.console.print(text)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False
