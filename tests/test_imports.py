"""The layer contract: the package is a stack of layers in the order of the flow, and each layer imports only
the layers below it (function-level imports count). Other stages reach a stage through its folder
(`from ..measure import run_one`), never through one of its files; the report is drawn from rows alone and imports
nothing of the data layer. `docs/layout.md` draws the same table, and every module imports on its own in a fresh
interpreter."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lstmbench"

# The layers, lowest first: (name, the modules it holds, what it is). Each may import only itself and those above
# it in this list. A stage folder holds every module under it.
LAYERS = [
    ("base", ("errors", "version", "stats", "faces"), "errors, version, the statistics, how a stage shows its names"),
    ("suite", ("suite",), "YAML -> a validated, frozen Suite; presets; reading what users hand us"),
    ("data", ("data",), "a seeded synthetic task or a real source -> Dataset; each seed's data made once"),
    ("strategies", ("strategies",), "batch plans and collation; their distributed form; the input pipeline"),
    ("measure", ("measure",), "one run: model, loop, clock, memory, evaluation, equivalence, machine, record"),
    ("batching", ("batching",), "the public batching API (lstmbench.batching), built on the strategies"),
    ("results", ("results",), "rows as readers take them; the results folder; the regression gate; exports"),
    ("run", ("run",), "preflight, the plan of runs and shards, a process per run (forkserver, spawn, torchrun)"),
    ("report", ("report",), "tables, paired accuracy, the recommendation, plots, the HTML page: from rows alone"),
    ("tune", ("tune",), "lengths --tune: the cost model fitted on probes of this machine"),
    ("cli", ("cli", "__main__"), "click: the only package that prints or exits"),
    ("face", ("",), "the package: lstmbench.load_suite, RunRecord, __version__"),
]
# what a layer may not import although it lies below, and why
FORBIDDEN = {
    "report": {"data": "a report is drawn from rows alone: it never makes, reads or tokenises a data set again",
               "strategies": "a report is drawn from rows alone", "run": "a report is drawn from rows alone"},
}
# (importer module, imported layer) -> why an import against the order is right
EXCEPTIONS: dict[tuple[str, str], str] = {}
# the stage folders: each shows what other stages may use in its __init__ (PUBLIC, MODULES: see lstmbench/faces.py)
STAGES = {"suite", "data", "strategies", "measure", "results", "run", "report", "tune"}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    rest = module.split(".")[1:]
    first = rest[0] if rest else ""
    return next(name for name, modules, _ in LAYERS if first in modules)


def _face(stage: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """A stage's face: its public names -> the file defining each, and the files it offers whole."""
    tree = ast.parse((PACKAGE / stage / "__init__.py").read_text())
    values = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
              for t in node.targets if isinstance(t, ast.Name)}
    public = ast.literal_eval(values["PUBLIC"])
    modules = ast.literal_eval(values["MODULES"]) if "MODULES" in values else ()
    return {name: f"lstmbench.{stage}.{file}" for file, names in public.items() for name in names}, modules


FACES = {stage: _face(stage) for stage in STAGES}


def _imports(name: str, path: Path) -> list[tuple[str, str, int]]:
    """(the module reached, how it was named, line) for each lstmbench import in `name`, anywhere in it; a name
    taken from a stage's folder counts as an import of the file its face names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, a.name, node.lineno) for a in node.names if a.name.startswith("lstmbench")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if not base.startswith("lstmbench"):
                continue
            stage = base.split(".")[1] if base.count(".") == 1 else None
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if stage in FACES and alias.name in FACES[stage][0]:
                    found.append((FACES[stage][0][alias.name], base, node.lineno))
                elif sub in MODULES:  # a file taken whole: through the folder when `base` is one
                    found.append((sub, base if stage in FACES else sub, node.lineno))
                else:
                    found.append((base, base, node.lineno))
    return [(m, how, line) for m, how, line in found if m in MODULES and m != name]


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}
GRAPH = {name: {m for m, _, _ in found} for name, found in IMPORTS.items()}
ORDER = [name for name, _, _ in LAYERS]


def test_the_graph_is_read():
    assert "lstmbench.measure.ddp" in GRAPH["lstmbench.measure.train"]  # a top-level import within a stage
    assert "lstmbench.measure.train" in GRAPH["lstmbench.run.worker"]  # a function-level one, through the folder
    assert layer_of("lstmbench.batching") == "batching" and layer_of("lstmbench") == "face"
    assert layer_of("lstmbench.report.plots") == "report"


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for name, found in IMPORTS.items():
        mine = ORDER.index(layer_of(name))
        for target, _, line in found:
            theirs = layer_of(target)
            if ORDER.index(theirs) > mine and (name, theirs) not in EXCEPTIONS:
                wrong.append(f"{MODULES[name].relative_to(ROOT)}:{line} ({layer_of(name)}) imports {target} ({theirs})")
            elif theirs in FORBIDDEN.get(layer_of(name), {}):
                wrong.append(f"{MODULES[name].relative_to(ROOT)}:{line} imports {target}: "
                             f"{FORBIDDEN[layer_of(name)][theirs]}")
    assert not wrong, "\n".join(wrong)


def test_other_stages_reach_a_stage_through_its_folder():
    wrong = []
    for name, found in IMPORTS.items():
        for target, how, line in found:
            stage = layer_of(target)
            if stage in STAGES and layer_of(name) != stage and how != f"lstmbench.{stage}":
                wrong.append(f"{MODULES[name].relative_to(ROOT)}:{line} imports {how}: import from lstmbench.{stage}")
    assert not wrong, "\n".join(wrong)


def test_a_file_offered_whole_is_named_by_its_face():
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level and node.module in STAGES \
                    and layer_of(name) != node.module:
                for alias in node.names:
                    public, whole = FACES[node.module]
                    assert alias.name in public or alias.name in whole, f"{name} takes {alias.name} from {node.module}"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_public_name_is_defined_where_its_face_says(stage):
    """...and no public name is also a file's name (an imported file would hide it on its folder)."""
    import importlib
    public, whole = FACES[stage]
    assert not {name for name in public if (PACKAGE / stage / f"{name}.py").exists()}
    face = importlib.import_module(f"lstmbench.{stage}")
    for name, module in public.items():
        assert getattr(importlib.import_module(module), name) is getattr(face, name), name
    assert sorted(face.__all__) == sorted([*public, *whole])
    with pytest.raises(AttributeError, match=f"module 'lstmbench.{stage}' has no attribute 'nothing'"):
        face.nothing  # noqa: B018


def _cycles() -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan's algorithm)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                out.append(sorted(part))

    for v in GRAPH:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    cycles = [c for c in _cycles() if not {"lstmbench", "lstmbench.__main__"} & set(c)]
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_docs_layout_draws_the_same_layers():
    """docs/layout.md's tree: one line per layer, in this order, each folder or file that is there."""
    text = (ROOT / "docs" / "layout.md").read_text()
    tree = text.split("```", 2)[1]
    drawn = re.findall(r"^(?:lstmbench/)?([a-z_]+)(?:/|\.py)?\s{2,}", tree, flags=re.M)
    listed = [m for _, modules, _ in LAYERS for m in modules if m and m != "__main__"]
    assert drawn == listed, f"docs/layout.md draws {drawn}, the layers are {listed}"
    for module in listed:
        assert (PACKAGE / module).is_dir() or (PACKAGE / f"{module}.py").exists(), module


@pytest.mark.parametrize("order", [sorted(MODULES), sorted(MODULES, reverse=True)], ids=["a-z", "z-a"])
@pytest.mark.slow
def test_every_module_imports_in_any_order(order):
    modules = [m for m in order if not m.endswith("__main__")]  # __main__ runs the CLI
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
