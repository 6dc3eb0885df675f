"""The package layout is the architecture: every import points down the layers, and no package imports `tap`.

`docs/architecture.md` names the layers; this test reads every module's imports and fails on an
import that points up or sideways, so the layout cannot drift from the document.
"""

from __future__ import annotations

import ast
import os

from twisted.trial.unittest import SynchronousTestCase

PACKAGE = "grafana_aggregator"
ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), PACKAGE)

#: Top to bottom; a package may import its own modules and any package in a lower layer.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"tap", "migrate_cli"}),
    frozenset({"example"}),
    frozenset({"processes"}),
    frozenset({"web", "controllers"}),
    frozenset({"aggregation"}),
    frozenset({"tls"}),
    frozenset({"identity"}),
    frozenset({"config"}),
    frozenset({"registry"}),
    frozenset({"apimachinery"}),
    frozenset({"storage"}),
)
#: Modules allowed at the top of the package, besides the packages of LAYERS.
TOP_LEVEL_MODULES = frozenset({"__init__", "tap", "migrate_cli"})


def layer_of(part: str) -> int:
    for number, layer in enumerate(LAYERS):
        if part in layer:
            return number
    raise KeyError(part)


def module_files() -> list[tuple[str, str, bool]]:
    """(module name, source, whether it is a package's __init__) of every module of the package."""
    found = []
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                relative = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                with open(path) as handle:
                    found.append((relative.removesuffix(".__init__"), handle.read(), name == "__init__.py"))
    return sorted(found)


def _is_module(name: str) -> bool:
    path = os.path.join(os.path.dirname(ROOT), *name.split("."))
    return os.path.isdir(path) or os.path.exists(path + ".py")


def imported_modules(module: str, source: str, is_package: bool) -> list[str]:
    """The absolute names of the package modules `module` imports."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = [f"{target}.{alias.name}" for alias in node.names if _is_module(f"{target}.{alias.name}")]
            names.extend(submodules or [target])
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return [name for name in names if name == PACKAGE or name.startswith(PACKAGE + ".")]


def part_of(module: str) -> str:
    """The package (or top-level module) a module belongs to: `web` for `grafana_aggregator.web.site`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def wrong_imports(modules: list[tuple[str, str, bool]]) -> list[str]:
    """Every import of one package by another that does not point down the layers (or that imports tap)."""
    wrong = []
    for module, source, is_package in modules:
        origin = part_of(module)
        for target in imported_modules(module, source, is_package):
            destination = part_of(target)
            if destination in ("__init__", origin):
                continue
            if destination == "tap" or layer_of(destination) <= layer_of(origin):
                wrong.append(f"{module} imports {target}")
    return wrong


class LayoutTests(SynchronousTestCase):
    """Imports between the packages of grafana_aggregator follow docs/architecture.md."""

    def test_every_module_is_in_a_package_named_for_its_job(self) -> None:
        """Only the wiring module (and the package's own __init__) live at the top; the rest is in a layer's package."""
        known = {part for layer in LAYERS for part in layer}
        for module, _, _ in module_files():
            parts = module.split(".")
            if len(parts) == 2 and not _is_module_dir(module):
                self.assertIn(parts[1], TOP_LEVEL_MODULES, module)
            elif len(parts) > 1:
                self.assertIn(parts[1], known, module)

    def test_imports_point_down(self) -> None:
        """A module imports its own package, or packages of lower layers, and nothing imports tap."""
        self.assertEqual(wrong_imports(module_files()), [])

    def test_apimachinery_imports_nothing_above_it(self) -> None:
        """apimachinery/ imports only itself and storage, never registry/ or a top-level module."""
        for module, source, is_package in module_files():
            if part_of(module) != "apimachinery":
                continue
            for target in imported_modules(module, source, is_package):
                self.assertIn(part_of(target), ("apimachinery", "storage", "__init__"), f"{module} imports {target}")

    def test_upward_and_sideways_imports_are_caught(self) -> None:
        """The checker resolves relative imports and flags an upward, a sideways and a tap import."""
        modules = [
            (f"{PACKAGE}.storage.example", "from ..web import site\n", False),
            (f"{PACKAGE}.web.example", "from ..controllers.availability import AvailabilityController\n", False),
            (f"{PACKAGE}.controllers.example", "from grafana_aggregator.tap import make_service\n", False),
            (f"{PACKAGE}.web.fine", "from ..aggregation import routing\nfrom .site import api_call\n", False),
        ]
        self.assertEqual(wrong_imports(modules), [
            f"{PACKAGE}.storage.example imports {PACKAGE}.web.site",
            f"{PACKAGE}.web.example imports {PACKAGE}.controllers.availability",
            f"{PACKAGE}.controllers.example imports {PACKAGE}.tap",
        ])


def _is_module_dir(module: str) -> bool:
    return os.path.isdir(os.path.join(os.path.dirname(ROOT), *module.split(".")))
