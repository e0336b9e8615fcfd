"""The module map holds: imports go one way, in the order the package states.

The order is read from the package docstring, so the docstring stays true: a
module may import (at run time or for annotations) only modules listed before
it, which also rules out every cycle. The NATS bridge imports only the public
API, ``_port`` and ``_log``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import trio_pubsub

PACKAGE = Path(trio_pubsub.__file__).parent
# The pytest plugin: no part of the core, loaded by pytest alone.
PYTEST_PLUGIN = {"_pytest_plugin", "_pytest_fixtures"}


def stated_order() -> list[str]:
    doc = trio_pubsub.__doc__
    assert doc is not None
    listed = doc.split("each from those before it in this list:")[1].split(";")[0]
    return re.findall(r"_[a-z]+", listed)


def relative_imports(path: Path) -> list[tuple[int, str]]:
    """(level, module) of every relative import in ``path``, nested ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.module:
                found.append((node.level, node.module.split(".")[0]))
            else:  # from .. import name, name...
                found.extend((node.level, alias.name) for alias in node.names)
    return found


def test_the_stated_order_names_every_core_module() -> None:
    """Every private module of the core is in the list, once."""
    order = stated_order()
    modules = {p.stem for p in PACKAGE.glob("_*.py") if p.stem != "__init__"}
    assert sorted(order) == sorted(modules - PYTEST_PLUGIN)


def test_core_modules_import_only_modules_before_them_issue_15() -> None:
    """No module imports one listed after it (so there is no cycle)."""
    order = stated_order()
    wrong = []
    for index, name in enumerate(order):
        for _, target in relative_imports(PACKAGE / f"{name}.py"):
            if target not in order[:index]:
                wrong.append(f"{name} imports {target}")
    assert wrong == []


def test_the_bridge_imports_only_the_public_api_port_and_log_issue_15() -> None:
    """nats/ reaches the broker through trio_pubsub, _port and _log alone."""
    public = set(trio_pubsub.__all__)
    wrong = []
    for path in (PACKAGE / "nats").glob("*.py"):
        for level, target in relative_imports(path):
            if level == 2 and target not in public | {"_port", "_log"}:
                wrong.append(f"nats/{path.name} imports {target}")
    assert wrong == []


def test_the_metric_modules_import_only_the_public_api_and_port_issue_18() -> None:
    """The prometheus and otel modules reach the broker through _port alone."""
    public = set(trio_pubsub.__all__)
    wrong = []
    for path in sorted(PACKAGE.glob("[a-z]*.py")):
        for level, target in relative_imports(path):
            if level == 1 and target not in public | {"_port", "nats", "__version__"}:
                wrong.append(f"{path.name} imports {target}")
    assert wrong == []


def test_the_pytest_plugin_imports_only_the_public_api_and_the_kit_issue_19() -> None:
    """The plugin is a user of the library, as a test suite would be."""
    public = set(trio_pubsub.__all__)
    wrong = [
        f"{name} imports {target}"
        for name in sorted(PYTEST_PLUGIN)
        for _, target in relative_imports(PACKAGE / f"{name}.py")
        if target not in public | {"testing", *PYTEST_PLUGIN}
    ]
    assert wrong == []


def test_only_the_inbox_parks_and_wakes_tasks() -> None:
    """Tasks are parked and rescheduled in _inbox alone, the one place to protect."""
    parking = re.compile(r"wait_task_rescheduled|\breschedule\(")
    users = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if parking.search(path.read_text())
    )
    assert users == ["_inbox.py"]


def test_the_port_keeps_no_state_of_its_own_issue_28() -> None:
    """What a broker's integrations share lives in the broker, not in ``_port``.

    Before, the exports open on each broker sat in a module-level dict keyed
    by ``id(broker)``.
    """
    mutable = (ast.Dict, ast.Set, ast.List, ast.DictComp, ast.SetComp, ast.ListComp)
    tree = ast.parse((PACKAGE / "_port.py").read_text())
    wrong = []
    for node in tree.body:
        value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
        if isinstance(value, mutable) or (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id in {"dict", "set", "list", "defaultdict"}
        ):
            wrong.append(ast.unparse(node).split("\n")[0])
    assert wrong == []


def private_reads(path: Path) -> set[str]:
    """Private names ``path`` reads on objects other than ``self``/``cls``.

    Names the module defines itself (functions, classes, module names,
    ``self.`` attributes, slots) are its own and not counted.
    """
    tree = ast.parse(path.read_text())
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            own.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in ("self", "cls"):
                own.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
    found = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (
                isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            )
            and node.attr not in own
        ):
            found.add(node.attr)
    return found


# What modules read of other modules' private attributes: nats-py's, in the
# bridge's client alone, each named with why there. The list may only shrink:
# a new read fails the test (issue 28). Before, _port read 13 of the broker's
# private names and otel a subscription's _inbox.
KNOWN_PRIVATE_READS = {
    "nats/_client.py": {"_id", "_pending_queue", "_received"},  # nats-py's, and why
    "nats/_core.py": {"_status"},  # nats-py's, per message (see there)
}


def test_no_module_reads_more_private_attributes_of_others_issue_28() -> None:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        reads = private_reads(path)
        if reads:
            found[str(path.relative_to(PACKAGE))] = reads
    grown = {
        module: sorted(reads - KNOWN_PRIVATE_READS.get(module, set()))
        for module, reads in found.items()
        if reads - KNOWN_PRIVATE_READS.get(module, set())
    }
    assert grown == {}
    gone = {
        module: sorted(reads - found.get(module, set()))
        for module, reads in KNOWN_PRIVATE_READS.items()
        if reads - found.get(module, set())
    }
    assert gone == {}, f"take these out of KNOWN_PRIVATE_READS: {gone}"


def test_trio_lowlevel_is_used_where_the_package_says_issue_28() -> None:
    """Checkpoints, parking and Ctrl-C protection live in three core modules.

    Before, six modules of the core used trio.lowlevel.
    """
    stated = trio_pubsub.__doc__
    assert stated is not None
    listed = stated.split("only ")[-1].split(" use trio.lowlevel")[0]
    named = sorted(re.findall(r"_[a-z]+", listed))
    users = sorted(
        path.stem
        for path in PACKAGE.glob("_*.py")
        if "lowlevel" in path.read_text()
        and path.stem not in {*PYTEST_PLUGIN, "__init__"}
    )
    # (_router: Ctrl-C protection around its counting, issue 30)
    assert users == named == ["_delivery", "_inbox", "_router", "_subscription"]
