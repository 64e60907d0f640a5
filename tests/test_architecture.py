"""The package's structure, checked: layers import downward only, no module reads
another module's private (underscore) names, and every test says what it shows.

docs/design.md draws the same layers; when a module moves, change both.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "cablecar"

#: Layers from the bottom. A module may import modules of its own layer or lower ones.
#: The first matching prefix of a module's dotted name (without ``cablecar.``) wins.
LAYERS: list[tuple[str, ...]] = [
    # 0: leaves, importable from everywhere; they import no cablecar module but each other
    ("errors", "_json", "_logging", "_urls", "_backoff", "_version", "_cli_help", "protocol"),
    # 1: values and contracts the core is written against
    ("config", "http", "transport", "_naming", "_remote", "_concurrency", "_memory", "_stats"),
    ("_outbox",),
    ("signing", "turbo"),
    ("instrumentation", "metrics", "static_files"),
    # 2: the pub/sub adapters and history stores (streams and bytes, nothing of channels)
    ("pubsub", "history"),
    # 3: the application-facing classes and the subscription runtime
    ("connection", "channel", "_subscription", "registry", "hub"),
    ("signed_streams",),
    # 4: one socket's state, and the sinks of the HTTP transports (event streams, polls)
    ("session", "sse", "longpoll"),
    # 5: one run of a cable, and the cable (with its HTTP broadcast API)
    ("_runtime", "cable", "broadcast_api"),
    # 6: what runs a cable or is built on it
    ("transports", "asgi", "broadcast", "_cli_broadcast", "testing", "contrib", "__init__"),
    ("client", "demo", "cli", "__main__"),
]

#: Imports the layering forbids explicitly, beyond the rank order (the issue's rules).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "protocol": ("config", "http", "pubsub", "channel", "session", "cable", "hub"),
    "pubsub": ("channel", "session", "cable", "hub", "_runtime", "connection", "transports"),
    "history": ("channel", "session", "cable", "hub", "_runtime", "connection", "transports"),
    "transports": ("channel", "session", "_subscription", "hub", "registry", "connection"),
}

#: Upward imports that are allowed, with the reason.
IMPORT_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("cable", "transports.asgi"): "Cable.asgi() is a shortcut for ASGIApp(cable); the import "
    "runs when it is called, so importing the core never loads a transport",
}

#: Reads of another module's underscore names that are allowed, with the reason.
PRIVATE_EXCEPTIONS: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _layer(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                return rank
    raise AssertionError(f"cablecar.{module} has no layer in LAYERS: add it")


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> list[str]:
    """The cablecar modules an ``import from`` names (a module, or names in one)."""
    if node.level:
        base = _package(module, path).split(".") if _package(module, path) else []
        base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
        target = ".".join([*base, *(node.module.split(".") if node.module else [])])
    elif node.module and (node.module == "cablecar" or node.module.startswith("cablecar.")):
        target = node.module.removeprefix("cablecar").lstrip(".")
    else:
        return []
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}" if target else alias.name
        out.append(sub if sub in MODULES else target or "__init__")
    return out


def _runtime_imports(module: str, path: Path) -> list[tuple[int, str]]:
    """Imports executed at run time (``if TYPE_CHECKING:`` blocks are annotations only)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in ast.walk(node):
                skip.add(id(child))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            found += [(node.lineno, target) for target in _resolve(module, path, node)]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("cablecar."):
                    found.append((node.lineno, alias.name.removeprefix("cablecar.")))
    return found


def test_every_module_has_a_layer() -> None:
    """Adding a module means deciding where it sits."""
    for module in MODULES:
        _layer(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    """A lower layer never imports a higher one: protocol imports only the leaves,
    pub/sub adapters know nothing of channels, sessions or the cable, transports
    reach the core only through the cable and the transport contract."""
    path = MODULES[module]
    mine = _layer(module)
    bad = []
    for lineno, target in _runtime_imports(module, path):
        if target == "__init__" or target.split(".")[0] == module.split(".")[0]:
            continue  # the package itself, or within one package
        if (module, target) in IMPORT_EXCEPTIONS:
            continue
        if _layer(target) > mine:
            bad.append(f"line {lineno}: imports {target} (layer {_layer(target)} > {mine})")
        for prefix, banned in FORBIDDEN.items():
            if module == prefix or module.startswith(prefix + "."):
                if any(target == b or target.startswith(b + ".") for b in banned):
                    bad.append(f"line {lineno}: {prefix} must not import {target}")
    assert not bad, f"cablecar.{module}:\n  " + "\n  ".join(bad)


@dataclass(frozen=True)
class _Read:
    module: str
    lineno: int
    name: str
    what: str


def _defined_private_names(paths: list[Path]) -> set[str]:
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)  # __slots__ entries
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return {n for n in names if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))}


def _owners(module: str) -> list[Path]:
    """The files whose private names ``module`` may read: its own, or its package's
    for a module inside a subpackage (``transports/standalone/*`` are friends). The
    top-level modules are each their own owner: they are the core's separate concepts."""
    path = MODULES[module]
    if "." not in module:
        return [path]
    return sorted(path.parent.glob("*.py"))


#: Every private name some cablecar module defines.
ALL_PRIVATE = _defined_private_names(list(MODULES.values()))


def _private_reads(module: str) -> list[_Read]:
    """Reads of private names that another cablecar module defines (a private name of
    the standard library, like ``os._exit``, is not ours to police)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    mine = _defined_private_names(_owners(module))
    foreign = ALL_PRIVATE - mine
    reads = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name = node.attr
            if name not in foreign:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            reads.append(_Read(module, node.lineno, name, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom):
            targets = _resolve(module, path, node)
            if not targets:
                continue  # not a cablecar module
            for alias, target in zip(node.names, targets, strict=True):
                if alias.name in foreign and target not in MODULES:
                    reads.append(_Read(module, node.lineno, alias.name, f"import {alias.name}"))
                elif alias.name in foreign and not target.endswith(alias.name):
                    reads.append(_Read(module, node.lineno, alias.name, f"import {alias.name}"))
    return [r for r in reads if (module, r.name) not in PRIVATE_EXCEPTIONS]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_reads_another_modules_private_names(module: str) -> None:
    """State has one owner: a module uses another's public names only (a subpackage's
    files may share theirs). Private *modules* (``_json``) are fine: their names are
    public to the package."""
    reads = _private_reads(module)
    assert not reads, f"cablecar.{module} reads private names:\n  " + "\n  ".join(
        f"line {r.lineno}: {r.what}" for r in reads
    )


TESTS = Path(__file__).resolve().parent


def _undocumented_tests() -> list[str]:
    missing = []
    for path in sorted(TESTS.rglob("test_*.py")):
        if "node_modules" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and node.name.startswith("test")
                and not ast.get_docstring(node)
            ):
                missing.append(f"{path.relative_to(TESTS)}:{node.lineno} {node.name}")
    return missing


def test_every_test_says_what_a_user_would_observe() -> None:
    """Every test function in tests/ has a docstring: what a user would observe when it
    passes (the name alone rarely says the whole of it)."""
    missing = _undocumented_tests()
    assert not missing, "tests without a docstring:\n  " + "\n  ".join(missing)
