"""Every Python snippet in README.md and docs/*.md runs as written (issue 21).

The blocks of one page run in order in one process, as a reader pastes them, in a scratch folder. To keep
the suite fast they run on scikit-learn's digits: the dataset name, the 28x28 input shape and the epoch
counts are substituted, nothing else. A block that cannot run here (a server, a cluster) says so with
`<!-- snippet: not run (reason) -->` on the line before its fence.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?P<marker><!-- snippet: not run \((?P<reason>[^)]+)\) -->\n)?```python\n(?P<code>.*?)```", re.S)
DIGITS = [
    (re.compile(r"\"fashion_mnist\"|'fashion_mnist'|\"mnist\""), '"digits"'),
    (re.compile(r"\(28, 28, 1\)"), "(8, 8, 1)"),
    (re.compile(r"\bepochs=\d+"), "epochs=1"),
    (re.compile(r"num_samples=1000\b"), "num_samples=10"),
]


def snippets(page):
    """(code blocks to run, reasons of the blocks that are not run) of one page."""
    run, skipped = [], []
    for block in BLOCK.finditer(page.read_text()):
        (skipped if block["marker"] else run).append(block["reason"] or block["code"])
    return run, skipped


def on_digits(code):
    for pattern, replacement in DIGITS:
        code = pattern.sub(replacement, code)
    return code


def test_readme_is_an_entry_point():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    for link in re.findall(r"\]\(((?:docs/)?[\w/.-]+\.md)\)", "\n".join(lines)):
        assert (ROOT / link).is_file(), link


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_snippets_run_as_written(page, tmp_path):
    blocks, skipped = snippets(page)
    assert all(reason.strip() for reason in skipped)
    if not blocks:
        pytest.skip(f"{page.name} has no Python block to run")
    script = "\n\n".join(on_digits(code) for code in blocks)
    (tmp_path / "snippets.py").write_text(script)
    result = subprocess.run([sys.executable, "snippets.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{page.name}:\n{result.stderr[-3000:]}"
