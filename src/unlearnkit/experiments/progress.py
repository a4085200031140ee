"""Progress reporting for benchmarks: a silent default, a rich display (runs and epochs, with ETA) and plain
lines for logs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class ProgressSink(Protocol):
    """What the runner reports to."""

    def start(self, total: int) -> None: ...
    def run_started(self, label: str) -> None: ...
    def run_finished(self, label: str, status: str) -> None: ...
    def epoch(self, epoch: int, total: int, loss: float) -> None: ...
    def close(self) -> None: ...


class NullProgress:
    """Reports nothing."""

    def start(self, total: int) -> None:
        pass

    def run_started(self, label: str) -> None:
        pass

    def run_finished(self, label: str, status: str) -> None:
        pass

    def epoch(self, epoch: int, total: int, loss: float) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bars(console: Console) -> Progress:
    """The rich display of :class:`RichProgress` and the sweep's display: one row per task with its
    description, bar, done/total, an ``info`` field, elapsed time and ETA; kept on screen when it stops."""
    return Progress(
        TextColumn("{task.description}", justify="left"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


class RichProgress:
    """Two bars: runs (done/total, ETA) and the epochs of the current training or unlearning step."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._p = progress_bars(self.console)
        self._runs: TaskID | None = None
        self._epochs: TaskID | None = None
        self.failed = 0

    def start(self, total: int) -> None:
        self._p.start()
        self._runs = self._p.add_task("runs", total=total, info="")
        self._epochs = self._p.add_task("epochs", total=1, info="", visible=False)

    def run_started(self, label: str) -> None:
        if self._epochs is not None:
            self._p.update(self._epochs, description=label, completed=0, total=1, info="", visible=True)

    def run_finished(self, label: str, status: str) -> None:
        if status == "failed":
            self.failed += 1
            self.console.print(f"[red]failed[/red] {label}")
        if self._runs is not None:
            self._p.update(self._runs, advance=1, info=f"failed {self.failed}" if self.failed else "")

    def epoch(self, epoch: int, total: int, loss: float) -> None:
        if self._epochs is not None:
            self._p.update(self._epochs, completed=epoch, total=total, info=f"loss {loss:.4f}")

    def close(self) -> None:
        self._p.stop()


class LineProgress:
    """One plain line per finished run (``[3/12] label: ok (4.2 s)``), for output that goes to a log file."""

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        self._write = write or (lambda line: print(line, flush=True))
        self._total = 0
        self._done = 0
        self._started: dict[str, float] = {}

    def start(self, total: int) -> None:
        self._total = total
        self._done = 0

    def run_started(self, label: str) -> None:
        self._started.setdefault(label, time.perf_counter())

    def run_finished(self, label: str, status: str) -> None:
        self._done += 1
        t0 = self._started.pop(label, None)
        took = f" ({time.perf_counter() - t0:.1f} s)" if t0 is not None else ""
        self._write(f"[{self._done}/{self._total}] {label}: {status}{took}")

    def epoch(self, epoch: int, total: int, loss: float) -> None:
        pass

    def close(self) -> None:
        pass
