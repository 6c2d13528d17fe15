"""What several commands share: the progress bar, thread count, writing an output file."""
from __future__ import annotations

import sys
from contextlib import contextmanager

from hmgen.errors import HmgenError


def torch_threads(n: int):
    import torch
    torch.set_num_threads(n)


@contextmanager
def writing(path):
    """Turn a failed write of `path` into one line naming it (not a temporary file's name)."""
    try:
        yield
    except OSError as e:
        raise HmgenError(f"{path}: cannot write ({e.strerror or e})") from None


class progress_bar:
    """A rich progress bar on stderr when it is a terminal and not quiet; otherwise nothing."""

    def __init__(self, quiet: bool, label: str):
        self.enabled = not quiet and sys.stderr.isatty()
        self.label = label

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        self.progress = Progress(TextColumn(f"[bold]{self.label}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self.progress.start()
        task = self.progress.add_task(self.label, total=None)
        return lambda done, total: self.progress.update(task, completed=done, total=total)

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.stop()
        return False
