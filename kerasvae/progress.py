"""Progress on long work: a bar with ETA on a terminal, a plain line every few seconds otherwise.

Off by default, so a Keras script that calls the library prints nothing it did not ask for; the
`kerasvae` command turns it on (`--quiet` keeps it off). Standard library only: the CLI imports this
before it imports TensorFlow.

>>> from kerasvae import progress
>>> with progress.bar(len(batches), "scoring") as bar:
...     for batch in batches:
...         work(batch)
...         bar.update()
"""

import contextlib
import math
import sys
import time

LINE_SECONDS = 10.0  # period of the plain lines written when stderr is not a terminal
REDRAW_SECONDS = 0.1

_enabled = False


def enable(on=True):
    """Turns progress reporting on (the CLI's default) or off (`--quiet`, and the library's default)."""
    global _enabled
    _enabled = bool(on)


def enabled():
    return _enabled


class Bar:
    """Counts `total` units of work named `description`; `update(n)` after each piece, `note(text)` for a
    value shown beside the count (a running NLL, a file name)."""

    def __init__(self, total, description, stream=None, unit=""):
        self.total, self.description, self.unit = max(int(total), 1), description, unit
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()
        self.done, self.text = 0, ""
        self.start = self._last = time.monotonic()
        self._drawn = False

    def update(self, n=1):
        self.done = min(self.done + n, self.total)
        now = time.monotonic()
        if now - self._last >= (REDRAW_SECONDS if self.terminal else LINE_SECONDS) or self.done == self.total:
            self._last = now
            self._write(now)

    def note(self, text):
        self.text = text

    def close(self):
        if self.terminal and self._drawn:  # leave the finished bar on its own line
            self.stream.write("\n")
        self.stream.flush()

    def _write(self, now):
        elapsed = now - self.start
        fraction = self.done / self.total
        eta = elapsed * (1 - fraction) / fraction if fraction else float("nan")
        unit = f" {self.unit}" if self.unit else ""
        timing = f"{_duration(elapsed)} elapsed" + (f", ETA {_duration(eta)}" if self.done < self.total else "")
        extra = f" {self.text}" if self.text else ""
        if self.terminal:
            width = 24
            filled = int(width * fraction)
            line = f"\r{self.description} [{'=' * filled}{'.' * (width - filled)}] {self.done}/{self.total}{unit} {timing}{extra}"
            self.stream.write(line + "\033[K")
        else:
            self.stream.write(f"{self.description}: {self.done}/{self.total}{unit} ({fraction:.0%}), {timing}{extra}\n")
        self.stream.flush()
        self._drawn = True


class _Silent:
    def update(self, n=1):
        pass

    def note(self, text):
        pass


@contextlib.contextmanager
def bar(total, description, unit="", enabled=None):
    """A `Bar` while progress is enabled (`enabled`: True or False overrides the switch for this bar, as a
    function's `verbose` argument does), otherwise an object whose methods do nothing."""
    if not (_enabled if enabled is None else enabled):
        yield _Silent()
        return
    progress_bar = Bar(total, description, unit=unit)
    try:
        yield progress_bar
    finally:
        progress_bar.close()


def iterate(items, description, unit=""):
    """Yields `items` (a sized collection) with a bar over them."""
    with bar(len(items), description, unit) as progress_bar:
        for item in items:
            yield item
            progress_bar.update()


def step(description):
    """One line saying a long step without a count has started (a conversion, a calibration)."""
    if _enabled:
        print(f"{description} ...", file=sys.stderr, flush=True)


def _duration(seconds):
    if math.isnan(seconds):  # no estimate yet
        return "?"
    seconds = round(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"
