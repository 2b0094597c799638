"""Open every page of the built book in headless Chromium, offline, and report what a reader would meet.

    python tools/browser_check.py [_build/html]

The site is served from 127.0.0.1 on a free port; every request to any other host is refused, so
the check sees the book as a reader without internet does. A page fails when

- an image does not load (``<img>`` not complete, or of zero natural width);
- MathJax is missing or leaves an equation untypeset: a math element without MathJax output, or
  raw TeX delimiters (``\\(``, ``\\[``, ``$$``) left in the text outside code;
- it logs a JavaScript error or an uncaught exception, or asks for anything off the local site;
- a cell prints an object repr (``<... at 0x...>``), or Markdown that was never rendered (a
  table's ``| --- |`` row left as text);
- a code block runs past its right edge (long lines must wrap);
- it is a notebook page without launch buttons (Binder; Colab where the page has a paired .ipynb,
  and no Colab button pointing at a .md) and the .ipynb download.

Chromium is Debian's (``/usr/bin/chromium``, or ``$HEBAE_CHROMIUM``), driven by the ``playwright``
Python package; ``tools/setup_env.sh`` installs both. Exit status 0 when every page passes.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPR = re.compile(r"<[\w.]+(?: object)? at 0x[0-9a-fA-F]+>")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
SKIP_DIRS = {"_static", "_sources", "_images", "_downloads"}

# Runs in the page once it has loaded: waits for MathJax and every image, then measures.
PROBE = """
async () => {
  for (const img of document.images) { img.loading = "eager"; }
  const settle = (img) => img.complete ? null : new Promise((done) => {
    img.addEventListener("load", done, {once: true});
    img.addEventListener("error", done, {once: true});
    setTimeout(done, 10000);
  });
  await Promise.all([...document.images].map(settle));
  const hasMathJax = !!(window.MathJax && MathJax.startup && MathJax.startup.promise);
  if (hasMathJax) { await MathJax.startup.promise; }
  const mathElements = [...document.querySelectorAll(".math")];
  const untypeset = mathElements.filter((el) => !el.querySelector("mjx-container")).map((el) => el.textContent.trim().slice(0, 80));
  const leftover = [], rawTables = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (!parent || parent.closest("pre, code, script, style, textarea, mjx-container, .highlight")) continue;
    const text = node.textContent;
    if (text.includes("\\\\(") || text.includes("\\\\[") || text.includes("$$")) leftover.push(text.trim().slice(0, 80));
    if (/\\|\\s*-{3,}\\s*\\|/.test(text)) rawTables.push(text.trim().slice(0, 80));
  }
  const broken = [...document.images].filter((img) => !img.complete || img.naturalWidth === 0).map((img) => img.getAttribute("src"));
  const overflowing = [...document.querySelectorAll("article pre")]
    .filter((pre) => pre.offsetParent !== null && pre.scrollWidth > pre.clientWidth + 2)
    .map((pre) => pre.textContent.split("\\n").reduce((a, b) => (b.length > a.length ? b : a), "").slice(0, 80));
  const launch = [...document.querySelectorAll(".dropdown-launch-buttons a")].map((a) => a.href);
  const downloads = [...document.querySelectorAll(".dropdown-download-buttons a")].map((a) => a.href);
  return {
    hasMathJax, mathCount: mathElements.length, mjxCount: document.querySelectorAll("mjx-container").length,
    untypeset, leftover, rawTables, broken, overflowing, launch, downloads,
    text: document.body.innerText, images: document.images.length,
  };
}
"""


def chromium_path() -> str | None:
    """Debian's Chromium (or ``$HEBAE_CHROMIUM``), when installed."""
    for candidate in (os.environ.get("HEBAE_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def missing_browser() -> str | None:
    """Why the check cannot run here (None when it can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (tools/setup_env.sh installs it)"
    if chromium_path() is None:
        return "no Chromium at /usr/bin/chromium (tools/setup_env.sh installs Debian's chromium; or set HEBAE_CHROMIUM)"
    return None


def pages(html: Path) -> list[Path]:
    """Every HTML page of the built site, less redirects and Sphinx's generated index pages."""
    found = []
    for path in sorted(html.rglob("*.html")):
        rel = path.relative_to(html)
        if rel.parts[0] in SKIP_DIRS or rel.name in ("genindex.html", "search.html", "py-modindex.html"):
            continue
        if 'http-equiv="Refresh"' in path.read_text(errors="replace")[:2000]:
            continue  # index.html: a redirect to the root page
        found.append(rel)
    return found


def is_notebook_page(rel: Path) -> bool:
    """True when the page's source is a MyST notebook (jupytext front matter)."""
    source = ROOT / rel.with_suffix(".md")
    if not source.exists():
        return False
    text = source.read_text()
    return text.startswith("---") and "jupytext:" in text.split("---", 2)[1]


@contextmanager
def serve(directory: Path):
    """Serve ``directory`` on 127.0.0.1 at a free port, quietly, for the duration of the block."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # a browser that closes a connection early (a cancelled request) is not an error of the site

    server = Server(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def check_page(page, base: str, rel: Path, timeout_ms: int) -> tuple[list[str], dict]:
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"uncaught exception: {exc}"))
    page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url} ({req.failure})"))
    page.goto(f"{base}/{rel.as_posix()}", wait_until="load", timeout=timeout_ms)
    result = page.evaluate(PROBE)
    problems = list(errors)
    if result["mathCount"] and not result["hasMathJax"]:
        problems.append(f"{result['mathCount']} math elements but MathJax did not load")
    problems += [f"untypeset equation: {t!r}" for t in result["untypeset"][:5]]
    problems += [f"raw TeX left in the text: {t!r}" for t in result["leftover"][:5]]
    problems += [f"Markdown table left as text: {t!r}" for t in result["rawTables"][:5]]
    problems += [f"image did not load: {src}" for src in result["broken"]]
    problems += [f"object repr in the output: {m}" for m in sorted(set(REPR.findall(result["text"])))]
    problems += [f"code runs past the right edge: {line!r}" for line in result["overflowing"][:5]]
    if is_notebook_page(rel):
        launch = " ".join(result["launch"])
        if "mybinder" not in launch:
            problems.append("notebook page without a Binder launch button")
        # Colab opens a page's paired .ipynb (book/<page>.ipynb); a page without one has no Colab button.
        colab = [href for href in result["launch"] if "colab.research.google.com" in href]
        if (ROOT / rel).with_suffix(".ipynb").exists() and not colab:
            problems.append("notebook page with a paired .ipynb but no Colab launch button")
        problems += [f"Colab button on a page Colab cannot open: {href}" for href in colab if not href.endswith(".ipynb")]
        if not any(href.endswith(".ipynb") for href in result["downloads"]):
            problems.append("notebook page without the .ipynb download")
    return problems, result


def check(html: Path, timeout_s: float = 60.0, log=print) -> dict[str, list[str]]:
    """Problems per page (relative path -> list of messages); every page is listed."""
    from playwright.sync_api import sync_playwright

    html = html.resolve()
    if not (html / "index.html").exists():
        raise FileNotFoundError(f"no built book at {html} (make book)")
    report: dict[str, list[str]] = {}
    with serve(html) as base, tempfile.TemporaryDirectory(prefix="hebae-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900}
        )
        # Offline, as a reader without internet: anything not served by the local site is refused.
        context.route(re.compile(r"^(?!http://127\.0\.0\.1:).*"), lambda route: route.abort("blockedbyclient"))
        try:
            for rel in pages(html):
                start = time.perf_counter()
                page = context.new_page()
                try:
                    problems, result = check_page(page, base, rel, int(timeout_s * 1000))
                except Exception as exc:  # a timeout or a crash is a failure of that page, not of the check
                    problems, result = [f"could not check the page: {exc}"], {"mjxCount": 0, "images": 0}
                finally:
                    page.close()
                report[rel.as_posix()] = problems
                status = "ok" if not problems else f"{len(problems)} problem(s)"
                log(f"{rel.as_posix():36s} {result['images']:3d} images, {result['mjxCount']:4d} equations typeset, "
                    f"{time.perf_counter() - start:4.1f} s: {status}")
                for line in problems:
                    log(f"    {line}")
        finally:
            context.close()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("html", nargs="?", type=Path, default=ROOT / "_build" / "html", help="the built site (default: _build/html)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed for one page to load")
    args = parser.parse_args(argv)
    why = missing_browser()
    if why:
        print(f"browser check: {why}", file=sys.stderr)
        return 2
    report = check(args.html, args.timeout)
    failed = [p for p, problems in report.items() if problems]
    print(f"browser check: {len(report) - len(failed)} of {len(report)} pages without problems")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
