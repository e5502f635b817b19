"""The package declares what it imports: installing ceres-mail anywhere brings every library it uses."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

from tests import machine_cache
from tests.conftest import PROJECT_DIR

FIRST_PARTY = {"components", "mailctl", "policy"}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules() -> dict[str, str]:
    """Top-level module -> a file importing it, for every import in the shipped packages."""
    found: dict[str, str] = {}
    for package in sorted(FIRST_PARTY):
        for path in sorted((PROJECT_DIR / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(PROJECT_DIR)))
    return found


def test_every_third_party_import_is_a_declared_dependency():
    """Every third-party library the shipped packages import is a declared dependency in pyproject.toml."""
    declared = {
        _normalized(re.split(r"[<>=!~ \[;]", requirement, maxsplit=1)[0])
        for requirement in tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    distributions = packages_distributions()
    missing = {
        module: where for module, where in imported_modules().items()
        if module not in FIRST_PARTY and module not in sys.stdlib_module_names
        and not {_normalized(d) for d in distributions.get(module, [module])} & declared
    }
    assert missing == {}, "imported but not in pyproject.toml's dependencies"


def test_the_pulumi_sdk_is_pinned_to_the_minor_the_recorder_was_written_for():
    """The recorder subclasses the SDK's mock monitor and uses its rpc helpers: internals of one minor."""
    [pulumi] = [r for r in tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["project"]["dependencies"]
                if re.split(r"[<>=!~ ]", r, maxsplit=1)[0] == "pulumi"]
    pinned = re.search(r"^pulumi==(\S+)$", (PROJECT_DIR / "requirements.txt").read_text(), re.M).group(1)
    major, minor, _ = pinned.split(".")
    assert pulumi == f"pulumi>={major}.{minor},<{major}.{int(minor) + 1}"


def test_make_refuses_an_unsupported_python_before_making_the_venv(tmp_path):
    """`make plan` with Python 3.10 says what is needed and leaves no .venv to break the next try."""
    import shutil
    import subprocess

    for name in ("Makefile", "pyproject.toml", "requirements.txt", "requirements-dev.txt"):
        shutil.copy(PROJECT_DIR / name, tmp_path / name)
    shutil.copytree(PROJECT_DIR / "tools", tmp_path / "tools")
    (tmp_path / "tests").mkdir()
    shutil.copy(PROJECT_DIR / "tests" / "tool-versions.mk", tmp_path / "tests" / "tool-versions.mk")  # the Makefile includes it
    old_python = tmp_path / "python3.10"
    old_python.write_text(
        "#!/bin/sh\n"
        f"exec {sys.executable} -c 'import runpy, sys; sys.version_info = (3, 10, 13, \"final\", 0); "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name=\"__main__\")' \"$@\"\n"
    )
    old_python.chmod(0o755)
    result = subprocess.run(["make", "plan", f"PYTHON={old_python}"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0
    assert "is Python 3.10.13; ceres-mail needs Python >=3.11,<3.14" in result.stderr
    assert not (tmp_path / ".venv").exists()


def test_the_built_wheel_ships_every_package_and_shell_template(tmp_path):
    """A wheel built from the project holds every subpackage and the install stages' .sh templates: an
    installed mailctl renders the stages from site-packages, not from a checkout."""
    import subprocess
    import zipfile

    import shutil

    wheelhouse = machine_cache.wheelhouse()  # the pinned build backend, offline (make wheelhouse)
    source = tmp_path / "source"  # a copy: setuptools leaves build/ and *.egg-info next to what it builds
    for package in sorted(FIRST_PARTY):
        shutil.copytree(PROJECT_DIR / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_DIR / "pyproject.toml", source / "pyproject.toml")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--find-links", str(wheelhouse), "-q",
         "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = tmp_path.glob("ceres_mail-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in sorted(p.parent for p in PROJECT_DIR.glob("*/**/__init__.py") if p.parts[len(PROJECT_DIR.parts)] in FIRST_PARTY):
        assert f"{package.relative_to(PROJECT_DIR).as_posix()}/__init__.py" in names, package
    templates = {p.relative_to(PROJECT_DIR).as_posix() for p in (PROJECT_DIR / "components/builders/shell").rglob("*.sh")}
    assert templates and templates <= names, sorted(templates - names)
    programs = {p.relative_to(PROJECT_DIR).as_posix() for p in VM_PROGRAMS.glob("*.py")}
    assert programs and programs <= names, sorted(programs - names)


#: the programs the stages ship to the mail VM and run there with Debian 12's python3 (3.11)
VM_PROGRAMS = PROJECT_DIR / "components/vm_programs"


def test_the_vm_programs_need_only_debian_12s_python_and_its_standard_library():
    """What runs on the mail VM parses as Python 3.11 and imports only the standard library: nothing else is there."""
    outside = []
    for path in sorted(VM_PROGRAMS.glob("*.py")):
        tree = ast.parse(path.read_text(), feature_version=(3, 11))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                outside.append(f"{path.name}: a relative import")
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            outside += [f"{path.name} imports {name}" for name in names if name.split(".")[0] not in sys.stdlib_module_names]
    assert outside == []


#: the shipped packages from the bottom up: a package imports only those below it (and itself)
LAYERS = ("components", "policy", "mailctl")


def test_no_import_runs_up_a_layer():
    """The settings and builders know nothing of the policy, and the policy nothing of mailctl: each reads
    plain values from below (the plan's markers come from the leaf policy.markers)."""
    upward = []
    for level, package in enumerate(LAYERS):
        above = set(LAYERS[level + 1:])
        for path in sorted((PROJECT_DIR / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                         [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
                upward += [f"{path.relative_to(PROJECT_DIR)} imports {name}" for name in names
                           if name.split(".")[0] in above]
    assert upward == []


def test_every_test_says_the_promise_it_keeps():
    """Each test has a docstring: the operator's promise it checks, read before its code."""
    silent = [f"{path.relative_to(PROJECT_DIR)}::{node.name}"
              for path in sorted((PROJECT_DIR / "tests").rglob("test_*.py"))
              for node in ast.walk(ast.parse(path.read_text()))
              if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")
              and not ast.get_docstring(node)]
    assert silent == []
