"""Small fixes to the book's HTML, loaded by jupyter-book (``sphinx.local_extensions`` in _config.yml).

- Each inline script once per page. Sphinx 7.4 adds the scripts registered after the builder
  started twice (``StandaloneHTMLBuilder.prepare_writing``), and sphinx-thebe registers one that
  declares ``const THEBE_JS_URL``: declared twice, it stops with a JavaScript error on every page.
- A Colab button only where Colab can open something. sphinx-book-theme points the Colab button
  at the page's paired ``.ipynb`` where one exists (the model pages and the lab, written by
  ``tools/pair_notebooks.py``) and at the MyST ``.md`` elsewhere, which Colab cannot open; on
  those pages the button is removed. Binder, which opens the whole repository, stays.
"""

from __future__ import annotations

from pathlib import Path


def unique_scripts(app, pagename, templatename, context, doctree) -> None:
    seen, unique = set(), []
    for script in context.get("script_files", []):
        # The same script may be registered once with filename None and once with "" (inline).
        attributes = getattr(script, "attributes", {})
        key = (getattr(script, "filename", str(script)) or "", tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def colab_only_with_a_pair(app, pagename, templatename, context, doctree) -> None:
    if pagename not in app.env.all_docs:
        return
    if Path(app.env.doc2path(pagename)).with_suffix(".ipynb").exists():
        return  # the theme already points Colab at the pair
    for group in context.get("header_buttons", []):
        if isinstance(group, dict) and group.get("label") == "launch-buttons":
            group["buttons"] = [b for b in group.get("buttons", []) if b.get("text") != "Colab"]


def html_nodes_in_one_page(app) -> None:
    """Extensions (myst-nb's hidden input, sphinx-proof, sphinx-exercise) teach their nodes to
    the ``html`` builder only; ``make pdf`` prints the ``singlehtml`` build, which writes HTML with
    the same translator and needs the same visitors (folded ``<details>`` stay closed in print)."""
    if app.builder.name != "singlehtml":
        return
    handlers = app.registry.translation_handlers
    single = handlers.setdefault("singlehtml", {})
    for node, visitors in handlers.get("html", {}).items():
        single.setdefault(node, visitors)


def setup(app):
    app.connect("builder-inited", html_nodes_in_one_page)
    app.connect("html-page-context", unique_scripts, priority=900)  # after every other handler
    app.connect("html-page-context", colab_only_with_a_pair, priority=502)  # after the theme adds them (501)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
