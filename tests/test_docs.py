"""The documentation: the site builds with ``mkdocs build --strict`` (broken links, missing
pages and unknown nav entries fail it), every Python snippet of the README and of the docs
runs, and the README stays short."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_snippets(path: Path) -> str:
    """The page's ```python blocks, in order, as one program."""
    return "\n".join(FENCE.findall(path.read_text()))


def _need_mkdocs():
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("CI"):
            pytest.fail("mkdocs is not installed: pip install -e '.[test]'")
        pytest.skip("mkdocs is not installed (pip install -e '.[test]')")


def test_docs_build_strict(tmp_path):
    _need_mkdocs()
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                          "-d", str(tmp_path / "site")], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    components = (tmp_path / "site" / "components" / "index.html").read_text()
    for name in ("painn", "egnn", "efa", "bond-graph", "charges", "cumulene", "sn2"):
        assert f"<code>{name}</code>" in components, name   # generated from the registries


@pytest.mark.parametrize("page", [p for p in PAGES if python_snippets(p)],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_python_snippets_run(page, tmp_path):
    """All ```python blocks of a page run in order in a fresh interpreter from the repository
    root (other fences — bash, yaml, text — are not run)."""
    script = tmp_path / "snippets.py"
    script.write_text(python_snippets(page))
    run = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, f"{page}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"


def test_readme_is_short_and_has_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = next(line for line in ci.splitlines() if "python -m pytest" in line)
    assert test_command.strip() in text             # CI runs the README's test command
    assert "pip install torch==2.13.0 && pip install -e . && mlip-attn demo" in text
    assert not re.search(r"issue \d+", text)        # history lives in CHANGELOG.md
