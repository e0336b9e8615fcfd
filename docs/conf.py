"""Sphinx configuration: MyST pages, API reference from docstrings."""

from __future__ import annotations

import trio_pubsub

project = "trio-pubsub"
copyright = "2026, the trio-pubsub developers"
release = trio_pubsub.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# The build runs offline, so there is no inventory of trio's or Python's docs to
# link to: names from those projects are left as plain text. Everything of this
# project must resolve.
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(trio|attrs|typing|collections|contextlib|types|opentelemetry|hypothesis)"
        r"\..*",
    ),
    (r"py:.*", r"(trio_pubsub(\.\w+)*\.)?(T|T_co)"),
    # hypothesis's strategy type, as trio_pubsub.testing's signatures name it
    (r"py:class", r"(st\.)?SearchStrategy"),
    # Subscription's generic base, ReceiveChannel[Message[T]], is resolved by
    # autodoc under Message's defining module; the page shows trio_pubsub.Message.
    (r"py:class", r"trio_pubsub\._message\.Message"),
    (
        r"py:.*",
        r"(int|str|bool|object|None|type|list|tuple|dict|Exception|ValueError"
        r"|TypeError|RuntimeError|KeyError|BaseException|enum\.Enum)",
    ),
]

# furo: a maintained theme with a navigation sidebar, prev/next links and a
# light and a dark mode; the version stands in the title.
html_theme = "furo"
html_static_path = ["_static"]
html_css_files = ["width.css"]
html_title = f"trio-pubsub {release}"
