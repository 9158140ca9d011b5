"""Progress output: bars on a terminal, lines in CI, nothing when quiet; never a secret."""

import io

from ociforge.oci.manifest import Descriptor
from ociforge.transports.progress import LineProgress, NullProgress, TtyProgress, make_progress

D = Descriptor("application/octet-stream", "sha256:" + "ab" * 32, 4 << 20)


class FakeTty(io.StringIO):
    def isatty(self):
        return True


def test_make_progress_picks_by_terminal_and_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert isinstance(make_progress(quiet=True, stream=FakeTty()), NullProgress)
    assert isinstance(make_progress(stream=FakeTty()), TtyProgress)
    assert isinstance(make_progress(stream=io.StringIO()), LineProgress)
    monkeypatch.setenv("CI", "true")
    assert isinstance(make_progress(stream=FakeTty()), LineProgress)


def test_tty_bars_and_summary():
    out = FakeTty()
    p = TtyProgress(out)
    p.begin("pushing r", 1, D.size)
    p.start(D)
    p.advance(D, 2 << 20)
    p.restart(D, 1 << 20)
    p.done(D, "pushed")
    p.finish("pushed r: 4.0 MiB sent")
    text = out.getvalue()
    assert "abababababab [" in text and "#" in text
    assert "pushed" in text and text.rstrip().endswith("4.0 MiB sent")


def test_line_progress_one_line_per_blob():
    out = io.StringIO()
    p = LineProgress(out)
    p.begin("pushing r", 1, D.size)
    p.start(D)
    p.advance(D, 1 << 20)
    p.done(D, "mounted")
    lines = out.getvalue().splitlines()
    assert lines == ["pushing r: 1 blobs, 4.0 MiB", "  abababababab mounted (4.0 MiB)"]
