"""kerasvae.progress: a redrawn bar with ETA on a terminal, plain periodic lines otherwise, nothing when off."""

import io

import pytest

from kerasvae import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    return now


def test_plain_lines_every_period_with_eta_then_the_total(clock):
    stream = io.StringIO()
    bar = progress.Bar(4, "scoring", stream=stream, unit="images")
    clock[0] += 1
    bar.update()  # within the period: no line yet
    clock[0] += progress.LINE_SECONDS
    bar.update()  # 2 of 4 after 11 s: 11 s more to go
    clock[0] += 1
    bar.update(2)  # done: always a last line
    bar.close()
    assert stream.getvalue().splitlines() == [
        "scoring: 2/4 images (50%), 11 s elapsed, ETA 11 s",
        "scoring: 4/4 images (100%), 12 s elapsed",
    ]


def test_a_terminal_gets_one_redrawn_line(clock):
    stream = Terminal()
    bar = progress.Bar(200, "IWAE NLL", stream=stream)
    for _ in range(200):
        clock[0] += 1
        bar.note("mean 27.60 nats")
        bar.update()
    bar.close()
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # redrawn in place, left on its own line at the end
    last = text.rstrip("\n").split("\r")[-1]
    assert last.startswith("IWAE NLL [========================] 200/200 3:20 elapsed mean 27.60 nats")
    assert "ETA 3:18" in text.split("\r")[2]  # after 2 of 200 in 2 s


def test_off_by_default_and_overridable(capsys):
    assert not progress.enabled()
    with progress.bar(3, "quiet") as bar:
        bar.update(3)
    with progress.bar(1, "asked for", enabled=True) as bar:  # a function's verbose=1
        bar.update()
    assert list(progress.iterate([1, 2], "off")) == [1, 2]
    err = capsys.readouterr().err
    assert "quiet" not in err and "asked for: 1/1 (100%)" in err
