"""Print the single-page HTML build of the book to a PDF with Chromium: no TeX needed.

    python tools/make_pdf.py _build/singlehtml _build/pdf/book.pdf     (make pdf)

The single-page build is served from 127.0.0.1 with every other request refused (as the browser
check does), MathJax is left to typeset every equation and every image to load, and Chromium
prints the page. The PDF is then opened and checked: it must have pages, and none of them may
be blank (no text and no image). Exit status 1 when the check fails.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser_check  # noqa: E402  (the same Chromium, server and offline rule)

# Waits for MathJax and every image, as the browser check does, then reports what it waited for.
READY = """
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  await Promise.all(Array.from(document.images).map(img => img.complete ? null :
      new Promise(done => { img.onload = img.onerror = done; })));
  const math = [...document.querySelectorAll(".math")];
  return {images: document.images.length, equations: document.querySelectorAll("mjx-container").length,
          math: math.length, untypeset: math.filter((el) => !el.querySelector("mjx-container")).length};
}
"""


def start_page(site: Path) -> str:
    """The page the single-page build lives on: jupyter-book's index.html only redirects to it."""
    index = (site / "index.html").read_text(errors="replace")
    found = re.search(r'http-equiv="Refresh" content="\d+;\s*url=([^"]+)"', index, re.IGNORECASE)
    return found.group(1) if found else "index.html"


def print_pdf(site: Path, out: Path, timeout_s: float = 300.0) -> dict:
    """Print ``site``/index.html to ``out``; return what the page held when it was printed."""
    from playwright.sync_api import sync_playwright

    if not (site / "index.html").exists():
        raise FileNotFoundError(f"{site}/index.html does not exist: build it with `jupyter-book build . --builder singlehtml`")
    why = browser_check.missing_browser()
    if why:
        raise RuntimeError(f"cannot print the PDF: {why}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial.pdf")
    with browser_check.serve(site) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_check.chromium_path())
        context = browser.new_context()
        context.route(re.compile(r"^(?!http://127\.0\.0\.1:).*"), lambda route: route.abort("blockedbyclient"))
        start = start_page(site)
        folder = start.rsplit("/", 1)[0] if "/" in start else ""
        if folder:
            # The page sits in a folder, and sphinx-mathjax-offline writes its script's path as if
            # it did not (_static/mathjax/... beside the page): serve the site's own _static there.
            def from_site_static(route):
                rest = route.request.url.split(f"/{folder}/_static/", 1)[1].split("?", 1)[0]
                route.fulfill(path=str(site / "_static" / rest))

            context.route(re.compile(rf"^http://127\.0\.0\.1:\d+/{re.escape(folder)}/_static/.*"), from_site_static)
        page = context.new_page()
        page.set_default_timeout(timeout_s * 1000)
        page.goto(f"{base}/{start}", wait_until="load")
        held = page.evaluate(READY)
        page.emulate_media(media="print")
        page.pdf(path=str(tmp), format="A4", print_background=True,
                 margin={"top": "15mm", "bottom": "15mm", "left": "12mm", "right": "12mm"})
        browser.close()
    tmp.replace(out)
    return held


def check_pdf(path: Path) -> dict:
    """Pages of the PDF and the (1-based) numbers of the blank ones: no text and no image."""
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    blank = []
    for number, page in enumerate(reader.pages, 1):
        text = (page.extract_text() or "").strip()
        images = len(page.images) if text == "" else 0
        if not text and not images:
            blank.append(number)
    return {"pages": len(reader.pages), "blank": blank}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("site", type=Path, help="the single-page HTML build (its index.html)")
    parser.add_argument("out", type=Path, help="the PDF to write")
    args = parser.parse_args(argv)
    held = print_pdf(args.site, args.out)
    report = check_pdf(args.out)
    print(f"pdf: {args.out}, {report['pages']} pages, {held['math'] - held['untypeset']} of {held['math']} equations typeset, "
          f"{held['images']} images")
    if report["pages"] == 0 or report["blank"] or held["untypeset"]:
        print(f"pdf: FAILED: {report['pages']} pages, blank pages {report['blank']}, {held['untypeset']} equations not typeset")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
