"""The built book, opened page by page in headless Chromium without network access.

The book is built first, as ``make book`` builds it (from the runs in results/, incremental:
seconds when nothing changed since the last build, the whole book on a fresh clone), so CI builds
it once, here. Then ``tools/browser_check.py`` serves ``_build/html`` on 127.0.0.1 and fails the
test when an image does not load, an equation is left untypeset, a page logs a JavaScript error
or asks for anything off the site, a cell prints an object repr, a code block runs past its
right edge, or a notebook page lacks its launch buttons.

Without Chromium or playwright the test is skipped with the reason, except in CI (``CI`` set),
where that is a failure: ``tools/setup_env.sh`` installs both.
"""

import os
import subprocess
import sys

import pytest

from hebae.paths import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "tools"))
import browser_check  # noqa: E402

HTML = PROJECT_ROOT / "_build" / "html"


def make(target: str) -> None:
    """``make <target>``, with the test suite's smoke-scale settings taken out of its environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("HEBAE_SMOKE", "HEBAE_RESULTS_DIR", "HEBAE_FIGURES_DIR", "HEBAE_PROFILE")}
    out = subprocess.run(["make", target], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, f"make {target} failed:\n{out.stdout[-6000:]}\n{out.stderr[-6000:]}"


def _needs_browser():
    """Skip without Chromium or playwright, except in CI, where that is a failure."""
    why = browser_check.missing_browser()
    if why:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"the browser check must run in CI: {why}")
        pytest.skip(why)


def test_every_page_renders_offline_in_a_browser():
    _needs_browser()
    make("book")
    lines = []
    report = browser_check.check(HTML, log=lines.append)
    print("\n".join(lines))
    failed = {page: problems for page, problems in report.items() if problems}
    assert len(report) >= 5, f"too few pages found in {HTML}: {sorted(report)}"
    assert not failed, "\n".join(lines)


def test_the_check_catches_each_fault(tmp_path):
    """A two-page site with one of each fault, and its twin without them (no book build: seconds)."""
    _needs_browser()
    (tmp_path / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=good.html" />')
    (tmp_path / "good.html").write_text("<html><body><article><p>plain text, a generator printed as &lt;Generator&gt;</p></article></body></html>")
    (tmp_path / "bad.html").write_text(
        "<html><body><article>"
        '<p><span class="math">\\(x^2\\)</span> and $$y$$</p>'
        "<p>| a | b | | --- | --- | | 1 | 2 |</p>"
        '<img src="missing.png">'
        "<pre>&lt;torch._C.Generator at 0x7f62d5f162f0&gt;</pre>"
        f'<pre style="width: 200px; overflow: auto">{"x" * 400}</pre>'
        "<script>console.error('boom')</script>"
        '<img src="https://example.org/remote.png">'
        "</article></body></html>"
    )
    report = browser_check.check(tmp_path, timeout_s=20, log=lambda line: None)
    assert set(report) == {"good.html", "bad.html"} and report["good.html"] == []
    bad = "\n".join(report["bad.html"])
    for expected in ("MathJax did not load", "untypeset equation", "raw TeX", "image did not load: missing.png",
                     "object repr in the output: <torch._C.Generator at 0x7f62d5f162f0>", "code runs past the right edge",
                     "console error: boom", "example.org", "Markdown table left as text"):
        assert expected in bad, f"{expected!r} not reported:\n{bad}"


def test_the_pdf_printer_finds_a_blank_page(tmp_path):
    _needs_browser()
    import make_pdf

    (tmp_path / "index.html").write_text(
        "<html><body><p>A page of words.</p><div style='page-break-after: always'></div>"
        "<div style='height: 1px'></div><div style='page-break-after: always'></div><p>The last page.</p></body></html>"
    )
    make_pdf.print_pdf(tmp_path, tmp_path / "out.pdf")
    assert make_pdf.check_pdf(tmp_path / "out.pdf") == {"pages": 3, "blank": [2]}
    with pytest.raises(FileNotFoundError, match="build it with"):
        make_pdf.print_pdf(tmp_path / "nothing", tmp_path / "x.pdf")


def test_the_book_prints_to_a_pdf_without_blank_pages():
    _needs_browser()
    make("pdf")
    import make_pdf  # tools/ is on the path (above)

    report = make_pdf.check_pdf(PROJECT_ROOT / "_build" / "pdf" / "book.pdf")
    assert report["pages"] > 20 and report["blank"] == []
