"""Sphinx configuration: MyST pages, API reference from docstrings."""

from __future__ import annotations

import inspect
import pkgutil
import re
import typing

from sphinx.pycode import ModuleAnalyzer

import trio_pubsub

project = "trio-pubsub"
copyright = "2026, the trio-pubsub developers"
release = trio_pubsub.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
]
# The summary tables at the top of the API page link to the entries below
# them; no page per name is generated.
autosummary_generate = False
# A signature longer than this shows one parameter per line.
maximum_signature_line_length = 88
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
# {{ release }} in a page: the version, from the package.
myst_enable_extensions = ["deflist", "substitution"]
myst_substitutions = {"release": release}

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Signatures show default values (64, OverflowPolicy.DROP_NEWEST), not the
# names of the constants that hold them.
autodoc_preserve_defaults = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# The build runs offline, so there is no inventory of trio's or Python's docs to
# link to: names from those projects are left as plain text. Everything of this
# project must resolve.
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(trio|attrs|typing|collections|contextlib|types|opentelemetry|hypothesis"
        r"|pathlib|datetime|sqlite3)"
        r"\..*",
    ),
    (r"py:.*", r"(trio_pubsub(\.\w+)*\.)?(T|T_co)"),
    # otel's names in a signature autodoc cannot evaluate (the nats extra's
    # types are imported for type checking alone there)
    (r"py:class", r"(metrics|trace)\.\w+"),
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


def _read_public_names_at_their_source() -> None:
    """Let autodoc find source order and attribute docstrings of public names.

    The package sets ``__module__`` of its public names to ``trio_pubsub``, so
    autodoc reads ``trio_pubsub/__init__.py`` for their source and finds
    neither the order of their members nor the docstrings of attrs fields.
    Merge what the private modules that define them say into that reading.
    """
    public = ModuleAnalyzer.for_module("trio_pubsub")
    public.analyze()
    for info in pkgutil.iter_modules(trio_pubsub.__path__):
        if not info.name.startswith("_") or info.ispkg:
            continue
        part = ModuleAnalyzer.for_module(f"trio_pubsub.{info.name}")
        part.analyze()
        public.attr_docs.update(part.attr_docs)
        public.tagorder.update(part.tagorder)
        public.tags.update(part.tags)
        public.annotations.update(part.annotations)
    if ("BrokerStatistics", "published") not in public.attr_docs:
        raise RuntimeError("the statistics fields' docstrings were not found")


_read_public_names_at_their_source()


_ASYNC_ITERATOR = re.compile(r"^(~?[\w.]*\.)?AsyncIterator\[")


def _context_manager_returns(
    app: object,
    what: str,
    name: str,
    obj: object,
    options: object,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None] | None:
    """Show what an ``@asynccontextmanager`` function returns: a context manager.

    autodoc reads the decorated generator's annotation, ``AsyncIterator[X]``;
    callers get an ``AbstractAsyncContextManager[X]`` to use in ``async with``.
    """
    wrapped = getattr(obj, "__wrapped__", None)
    if (
        what == "function"
        and wrapped is not None
        and inspect.isasyncgenfunction(wrapped)
        and return_annotation
    ):
        fixed = _ASYNC_ITERATOR.sub(
            "~contextlib.AbstractAsyncContextManager[", return_annotation
        )
        return signature, fixed
    return None


def setup(app: typing.Any) -> None:
    """Hook the signature fix into autodoc."""
    app.connect("autodoc-process-signature", _context_manager_returns)
