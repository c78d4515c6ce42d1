"""The package layout explains itself: pure packages import no ComfyUI, a feature uses only the shared layers and
its own folder, and no pack module imports itself back through others."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODES = os.path.join(ROOT, "nodes")
PURE = ("precision", "detect", "regions")  # no ComfyUI import, unit-tested on plain tensors
SHARED = PURE + ("host",)  # what two or more features use
FEATURES = ("policy", "decode", "dtype_inspect", "guard", "enforce", "save", "detailer")
COMFY_MODULES = {"comfy", "comfy_api", "comfy_execution", "comfy_extras", "nodes", "folder_paths", "execution",
                 "server", "node_helpers", "latent_preview", "app", "utils"}


def _modules():
    """dotted name under nodes/ -> path, for every module of the pack."""
    found = {}
    for folder, _, files in os.walk(NODES):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), NODES)[:-3].replace(os.sep, ".")
                found[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, f)
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES.get(name, "").endswith("__init__.py")


def _imports(name: str):
    """(absolute imports, pack modules imported) of one module, function-local ones too; relative imports resolved
    to dotted names."""
    with open(MODULES[name]) as f:
        tree = ast.parse(f.read())
    nodes = list(ast.walk(tree))
    package = name.split(".") if _is_package(name) else name.split(".")[:-1]
    absolute, pack = set(), set()
    for node in nodes:
        if isinstance(node, ast.Import):
            absolute |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            absolute.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
            target = ".".join(base + ([node.module] if node.module else []))
            subs = [f"{target}.{a.name}".strip(".") for a in node.names]
            named = [s for s in subs if s in MODULES]
            pack |= set(named) if named else {target}
    return absolute, {p for p in pack if p}


def test_the_layout_lists_every_folder():
    folders = {n.split(".")[0] for n in MODULES if "." in n}
    assert folders == set(SHARED + FEATURES), folders


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.split(".")[0] in PURE))
def test_pure_modules_import_no_comfyui(name):
    absolute, pack = _imports(name)
    assert not absolute & COMFY_MODULES, f"nodes/{name} imports {sorted(absolute & COMFY_MODULES)}"
    assert all(p.split(".")[0] in PURE for p in pack), f"nodes/{name} imports {sorted(pack)}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.split(".")[0] in FEATURES + ("host",)))
def test_a_feature_uses_only_the_shared_layers_and_its_own_folder(name):
    own = name.split(".")[0]
    _, pack = _imports(name)
    foreign = sorted(p for p in pack if p.split(".")[0] not in SHARED + (own,))
    assert not foreign, f"nodes/{name} imports another feature's internals: {foreign}"


def test_no_import_circle():  # a function-local import hides a circle from Python, not from this test
    graph = {n: {p for p in _imports(n)[1] if p in MODULES} for n in MODULES}

    def visit(n, path):
        if n in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(n):] + [n]))
        for m in graph[n]:
            visit(m, path + [n])
    for n in graph:
        visit(n, [])
