"""The layers, one way (issue 13, section 4): every import under src/midilm, read with `ast`, follows the
data's path music -> codecs -> annotate -> models -> train | generate | understand -> evaluate -> serve | cli.

A package imports only from the packages before it (siblings of one level not from each other), never from
the top-level `midilm.cli`, and never a private `_name` of another module. Imports inside functions count
the same as those at the top of a module. The top-level helper modules (`midilm.errors`,
`midilm.cli_common`) are the bottom layer: every package may use them and they use no package.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "midilm"
LAYER = {"music": 0, "codecs": 1, "annotate": 2, "models": 3, "train": 4, "generate": 4, "understand": 4,
         "evaluate": 5, "serve": 6}
BOTTOM = -1  # top-level helper modules: midilm.errors, midilm.cli_common
TOP = 7  # midilm.cli and midilm/__init__.py may import anything

# Known violations still being removed by their owners: (importing module, what it may still import: a package
# for a layer violation, module:_name for a private name), each with a comment naming it. An entry that no longer
# occurs fails `test_allow_list_holds_only_live_violations`, so that the list only shrinks. Every entry of
# issue 13's section 4 (models -> generate and understand, understand <-> train, evaluate -> generate.cli,
# annotate and generate.cli -> midilm.cli, train private helpers) is fixed: the list is empty.
ALLOWED: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def top_of(module: str) -> str:
    """The package (or top-level module) a dotted midilm module belongs to: 'midilm.generate.cli' -> 'generate'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(top: str) -> int:
    if top in LAYER:
        return LAYER[top]
    if top in ("cli", "__init__"):
        return TOP
    return BOTTOM


def is_module(dotted: str) -> bool:
    """Whether a dotted name is a module or package of midilm (a .py file, a compiled extension or a folder)."""
    base = SRC.parent.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or base.is_dir() or any(base.parent.glob(base.name + ".*.so"))


def imports(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, midilm module, imported name or None) for every import in a file, relative ones resolved, and for
    `__import__` / `importlib.import_module` calls with a literal module name."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                # `from midilm.x import y` where y is itself a module imports that module
                full = f"{base}.{a.name}"
                found.append((node.lineno, full, None) if is_module(full) else (node.lineno, base, a.name))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            fn = node.func
            name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
            if name in ("__import__", "import_module") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value, None))
    return [(line, mod, name) for line, mod, name in found if mod == "midilm" or mod.startswith("midilm.")]


def allowed(own: str, theirs: str) -> bool:
    """Whether code of `own` (a package or top-level module) may import from `theirs`."""
    if own == theirs or own in ("cli", "__init__"):
        return True
    mine, other = layer_of(own), layer_of(theirs)
    if mine == BOTTOM:
        return other == BOTTOM  # the helpers use each other and no package
    return other < mine


def is_private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def violations() -> list[tuple[str, str, str]]:
    """(importing module, allow-list key, description) for every import against the rules."""
    out = []
    for path in sorted(SRC.rglob("*.py")):
        module = module_name(path)
        own = top_of(module)
        for line, target, name in imports(path):
            where = f"{path.relative_to(SRC.parent.parent)}:{line}"
            dotted = target if name is None else f"{target}.{name}"
            theirs = top_of(target)
            if not allowed(own, theirs):
                kind = "sibling" if layer_of(own) == layer_of(theirs) else "upward"
                out.append((module, theirs, f"{where}: {module} ({own}) imports {dotted} ({kind} import)"))
            if name is not None and is_private(name) and target != module.rpartition(".")[0]:
                # (a private name of the importer's own package, e.g. its compiled extension, is its business)
                key = f"{target}:{name}"
                out.append((module, key, f"{where}: {module} imports the private name {key}"))
            elif any(is_private(p) for p in target.split(".")) and theirs != own:
                # a private submodule is its own package's business (music._smfscan)
                out.append((module, target, f"{where}: {module} imports the private module {target}"))
    return out


def test_every_package_has_a_layer():
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(LAYER), f"place new packages in LAYER: {sorted(packages ^ set(LAYER))}"
    tops = {p.stem for p in SRC.glob("*.py")} - {"__init__", "cli"}
    assert tops == {"errors", "cli_common"}, f"a new top-level module: decide its layer here ({sorted(tops)})"


def test_imports_flow_one_way():
    bad = [text for module, key, text in violations() if (module, key) not in ALLOWED]
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_allow_list_holds_only_live_violations():
    live = {(module, key) for module, key, _ in violations()}
    fixed = sorted(ALLOWED - live)
    assert not fixed, f"fixed: remove from ALLOWED in tests/test_layers.py: {fixed}"


def test_the_checker_sees_violations(tmp_path):
    """The rules catch each kind of back-import (a checker that sees nothing would pass everything)."""
    global SRC
    saved = SRC
    root = tmp_path / "src" / "midilm"
    for pkg in LAYER:
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "cli.py").write_text("")
    (root / "errors.py").write_text("")
    (root / "models" / "a.py").write_text("from midilm.generate import sampler\nfrom midilm.errors import X\n")
    (root / "understand" / "b.py").write_text("def f():\n    from midilm.train.t2m import something\n")
    (root / "annotate" / "c.py").write_text("from midilm.cli import report\nimport midilm.music\n")
    (root / "evaluate" / "d.py").write_text("from midilm.generate.cli import _load\nfrom . import e\n")
    (root / "evaluate" / "e.py").write_text("from ..serve import app\n")
    (root / "music" / "f.py").write_text("from midilm.music import _ext\nimportlib.import_module('midilm.codecs')\n")
    (root / "music" / "_ext.py").write_text("")
    try:
        SRC = root
        found = sorted(key for _, key, _ in violations())
        assert found == ["cli", "codecs", "generate", "midilm.generate.cli:_load", "serve", "train"], found
    finally:
        SRC = saved
