"""Every registry (models, methods, data sources, CLI commands) discovers its package's modules the
same way, and a module that fails to import fails the discovery instead of being skipped."""
from __future__ import annotations

import importlib
import pkgutil
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

import kdlab.cli
import kdlab.data
import kdlab.methods
import kdlab.models
from kdlab import registry
from kdlab.cli.main import _register, app
from kdlab.registry import NOT_REGISTRANTS, import_submodules

_register()


def _registrant_modules(package) -> set[str]:
    skip = NOT_REGISTRANTS.get(package.__name__, frozenset())
    return {f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)
            if not m.name.startswith("_") and m.name not in skip}


def _modules_of(reg) -> set[str]:
    return {reg.get(name).__module__ for name in reg.names()}


def _command_modules() -> set[str]:
    commands = list(app.registered_commands)
    for group in app.registered_groups:
        commands += group.typer_instance.registered_commands
    return {c.callback.__module__ for c in commands}


@pytest.mark.parametrize("package, reg", [(kdlab.models, kdlab.models.MODELS), (kdlab.methods, kdlab.methods.METHODS),
                                          (kdlab.data, kdlab.data.DATASETS)], ids=["models", "methods", "data"])
def test_every_module_of_a_registry_package_registers_something(package, reg):
    expected = _registrant_modules(package)
    assert len(expected) >= 5
    silent = sorted(expected - _modules_of(reg))
    assert not silent, (f"modules that register nothing: {silent}; a helper's name starts with '_' "
                        "or is listed in kdlab.registry.NOT_REGISTRANTS")
    assert _modules_of(reg) == expected


def test_every_cli_module_adds_a_command():
    expected = _registrant_modules(kdlab.cli)
    assert {"kdlab.cli.train", "kdlab.cli.distill", "kdlab.cli.info", "kdlab.cli.cache"} <= expected
    assert _command_modules() == expected
    assert sorted(_register()) == sorted(m.rpartition(".")[2] for m in expected)  # idempotent
    help_text = CliRunner().invoke(app, ["--help"]).output
    assert help_text.index(" train ") < help_text.index(" distill ") < help_text.index(" bench ")


@pytest.fixture
def scratch_package(tmp_path, monkeypatch):
    """A real package on sys.path, written module by module; removed from sys.modules afterwards."""
    name = f"kdlab_scratch_{uuid.uuid4().hex[:8]}"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("LOADED = []\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(module: str, code: str) -> Path:
        path = root / f"{module}.py"
        path.write_text(textwrap.dedent(code))
        return path

    yield name, root, write
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[mod]


def test_discovery_imports_registrants_and_skips_helpers(scratch_package, monkeypatch):
    name, root, write = scratch_package
    for mod in ("alpha", "beta"):
        write(mod, f"import {name}\n{name}.LOADED.append({mod!r})\n")
    write("_private", "raise RuntimeError('a leading underscore is never imported')\n")
    write("helper", "raise RuntimeError('an excluded helper is never imported')\n")
    monkeypatch.setitem(registry.NOT_REGISTRANTS, name, frozenset({"helper"}))
    package = importlib.import_module(name)
    assert import_submodules(name, package.__path__) == ["alpha", "beta"]
    assert package.LOADED == ["alpha", "beta"]


@pytest.mark.parametrize("code, error", [
    ("import kdlab_no_such_dependency_anywhere\n", ModuleNotFoundError),
    ("from kdlab.models import no_such_name\n", ImportError),
    ("raise ImportError('broken on purpose')\n", ImportError),
])
def test_a_module_that_fails_to_import_fails_discovery(scratch_package, code, error):
    name, root, write = scratch_package
    write("good", "VALUE = 1\n")
    write("broken", code)
    package = importlib.import_module(name)
    with pytest.raises(error) as info:
        import_submodules(name, package.__path__)
    assert any(name in note for note in getattr(info.value, "__notes__", []))
    assert f"{name}.broken" not in sys.modules


def test_a_broken_command_module_fails_the_command_line(tmp_path, monkeypatch):
    (tmp_path / "zz_broken_command.py").write_text("import kdlab_no_such_dependency_anywhere\n")
    monkeypatch.setattr(kdlab.cli, "__path__", [*kdlab.cli.__path__, str(tmp_path)])
    with pytest.raises(ModuleNotFoundError, match="kdlab_no_such_dependency_anywhere"):
        _register()
    assert "kdlab.cli.zz_broken_command" not in sys.modules


def test_every_data_source_documents_what_it_expects():
    for name in kdlab.data.list_datasets():
        doc = kdlab.data.DATASETS.get(name).__doc__ or ""
        assert len(doc.split("\n\n")[0].split()) >= 15, f"data source {name!r} needs a docstring"


def test_datasets_command_shows_options_and_expectations():
    result = CliRunner().invoke(app, ["datasets"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    for name in kdlab.data.list_datasets():
        assert f"\n{name}\n" in result.output
    # options with their defaults, never `root`
    assert "options: path=None, channels_last=False" in out
    assert "label_column='label'" in out and "delimiter=','" in out and "test_path=None" in out
    assert "options: image_size=32, grayscale=False" in out
    assert "options: coarse=False" in out
    assert "root=" not in out
    # npz keys
    for key in ("`x`", "`y`", "`x_test`", "`y_test`", "`classes`"):
        assert key in out
    # csv label column
    assert "`label_column`" in out
    # imagefolder layouts
    assert "`root/<class>/<image>`" in out and "`root/train/<class>/<image>`" in out
    assert "`root/test/<class>/<image>`" in out
    # where fashion-mnist and cifar files are looked for
    assert "/usr/share/datasets/fashion-mnist" in out and "train-images-idx3-ubyte" in out
    assert "`root/cifar-10-batches-py`" in out and "`$KDLAB_DATA/cifar-100-python`" in out
