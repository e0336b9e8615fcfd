"""The built package, installed in a fresh venv as a user would (issue 19).

Builds the sdist and the wheel (without build isolation: hatchling comes from
the dev tools), checks them with ``twine check``, installs the wheel into a new
venv (pip fetches trio and attrs from the index), and from there imports it,
reads its metadata and runs the quickstart, away from the source tree.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import trio_pubsub

ROOT = Path(__file__).resolve().parents[2]
GUARD = 600  # seconds: a guard against hanging, never a measure

CHECK = """
import importlib.metadata as metadata, importlib.resources as resources, json
import trio_pubsub
dist = metadata.distribution("trio-pubsub")
print(json.dumps({
    "version": trio_pubsub.__version__,
    "metadata_version": dist.version,
    "typed": resources.files("trio_pubsub").joinpath("py.typed").is_file(),
    "extras": sorted(dist.metadata.get_all("Provides-Extra") or []),
    "requires": sorted(dist.requires or []),
    "plugins": sorted(
        f"{e.name}={e.value}" for e in dist.entry_points if e.group == "pytest11"
    ),
    "file": trio_pubsub.__file__,
}))
"""


def run(*command: str | Path, cwd: Path = ROOT) -> str:
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=GUARD,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def fresh_venv(tmp_path: Path, *requirements: str) -> tuple[Path, Path]:
    """A new venv with ``requirements``: its python, and a place to run it.

    The place is outside the clone, so that no ``src/`` is on the path.
    """
    home = tmp_path / "venv"
    venv.create(home, with_pip=True)
    python = home / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", *requirements)
    away = tmp_path / "elsewhere"
    away.mkdir()
    return python, away


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ".")
    return out


def test_the_sdist_and_the_wheel_pass_twine_check(built: Path) -> None:
    files = sorted(built.iterdir())
    assert sorted(f.suffix for f in files) == [".gz", ".whl"]
    assert all(trio_pubsub.__version__ in f.name for f in files)
    run(sys.executable, "-m", "twine", "check", "--strict", *files)


def test_the_wheel_installs_in_a_fresh_venv_and_runs_the_quickstart(
    built: Path, tmp_path: Path
) -> None:
    (wheel,) = built.glob("*.whl")
    python, away = fresh_venv(tmp_path, str(wheel))
    home = tmp_path / "venv"
    facts = json.loads(run(python, "-c", CHECK, cwd=away))
    assert facts["version"] == facts["metadata_version"] == trio_pubsub.__version__
    assert facts["typed"]
    assert str(home) in facts["file"]
    assert facts["extras"] == ["nats", "otel", "prometheus", "testing"]
    assert facts["plugins"] == ["trio_pubsub=trio_pubsub._pytest_plugin"]
    requires = facts["requires"]

    def of(extra: str | None) -> list[str]:
        """The names of what ``extra`` (None: the core) requires."""
        names = []
        for requirement in requires:
            name, _, marker = requirement.partition(";")
            wanted = None if not marker else marker.split("==")[-1].strip(" '\"")
            if wanted == extra:
                names.append(re.split(r"[<>=!~ ]", name.strip())[0])
        return sorted(names)

    assert of(None) == ["attrs", "trio"]
    # each extra pulls in only what it needs: the API of OpenTelemetry, not its SDK
    assert of("otel") == ["opentelemetry-api"]
    assert of("nats") == ["nats-py"]
    assert of("prometheus") == ["prometheus-client"]
    assert of("testing") == ["hypothesis"]
    quickstart = (ROOT / "examples" / "quickstart.py").read_text()
    (away / "quickstart.py").write_text(quickstart)
    out = run(python, "quickstart.py", cwd=away)
    assert "orders.42.created: order 42 was created" in out


def fixture_example() -> str:
    """The example of the pytest fixtures in the property-testing how-to."""
    page = (ROOT / "docs" / "how-to" / "property-test-routing.md").read_text()
    section = page.split("## The pytest fixtures", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_how_to_example_passes_with_the_testing_extra_from_the_wheel(
    built: Path, tmp_path: Path
) -> None:
    # What the property-testing how-to promises: install the wheel with
    # [testing], copy its example, and the hypothesis suite passes.
    (wheel,) = built.glob("*.whl")
    python, away = fresh_venv(tmp_path, f"{wheel}[testing]", "pytest", "pytest-trio")
    example = (ROOT / "examples" / "property_test_routing.py").read_text()
    (away / "test_routing.py").write_text(example)
    (away / "test_fixture.py").write_text(fixture_example())
    (away / "pytest.ini").write_text("[pytest]\ntrio_mode = true\n")
    out = run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=away)
    assert re.search(r"\b5 passed\b", out), out
