"""Small fixes to the book's HTML, loaded by jupyter-book (``sphinx.local_extensions`` in _config.yml).

- Each inline script once per page. Sphinx 7.4 adds the scripts registered after the builder
  started twice (``StandaloneHTMLBuilder.prepare_writing``), and sphinx-thebe registers one that
  declares ``const THEBE_JS_URL``: declared twice, it stops with a JavaScript error on every page.
"""

from __future__ import annotations


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


def setup(app):
    app.connect("html-page-context", unique_scripts, priority=900)  # after every other handler
    return {"parallel_read_safe": True, "parallel_write_safe": True}

