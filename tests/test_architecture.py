"""The layering that docs/architecture.md describes, checked: every import points down its
rows (or sideways, without a cycle), inference does not load the training code, and no
source file or function grows past what a reader can hold."""

import ast
from collections.abc import Iterator
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "imgcls"

# docs/architecture.md's rows, top first, by top-level module or package ("imgcls": the
# package's own __init__, which loads only errors.py and the rest on first use). A module
# imports its own unit, units of its own row (sideways: the units' import graph has no
# cycle) and units of the rows under it, never a unit of a row above.
ROWS = (
    ("__main__", "cli", "cli_parser", "config_flags"),  # the front door
    ("api", "bench", "compare", "tune"),  # the Python API and the commands beyond one run
    ("training", "resolve", "resume", "defaults", "pretrained", "ssl", "engine",  # the jobs:
     "evaluation", "prediction", "explain", "export", "serve", "audit"),  # training, inference
    ("run", "report"),  # the run-folder contract, the evaluation report
    ("data", "models"),  # data sets, the model zoo
    ("runtime",),  # what training and inference both run on an image
    ("imgcls", "config", "distributed", "errors", "metrics", "progress", "results", "utils"),
)
TRAINING = ("training", "resolve", "resume", "defaults", "pretrained", "ssl", "engine")
INFERENCE = ("evaluation", "prediction", "explain", "export", "serve", "audit")


def _unit(module: str) -> str:
    """The unit of a dotted module name: its top-level module or package under imgcls."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] != "__init__" else "imgcls"


def _imports(path: Path) -> Iterator[str]:
    """Every imgcls module that the file imports, at its top or inside a function, as a
    dotted name; imports under ``if TYPE_CHECKING:`` load nothing and are left out."""
    package = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
                   for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            names = [".".join(p for p in (base, node.module) if p)]
        else:
            continue
        yield from (n for n in names if n.split(".")[0] == "imgcls")


def _unit_imports() -> dict[str, dict[str, set[str]]]:
    """{unit: {imported unit: the files that import it}}, other units only."""
    graph: dict[str, dict[str, set[str]]] = {}
    for path in SRC.rglob("*.py"):
        unit = _unit(".".join(path.relative_to(SRC.parent).with_suffix("").parts))
        for imported in map(_unit, _imports(path)):
            if imported != unit:
                graph.setdefault(unit, {}).setdefault(imported, set()).add(
                    str(path.relative_to(SRC)))
        graph.setdefault(unit, {})
    return graph


def test_every_import_points_down_or_sideways_without_a_cycle():
    row = {unit: i for i, units in enumerate(ROWS) for unit in units}
    graph = _unit_imports()
    assert sorted(set(graph) - set(row)) == []  # a new module takes its place in ROWS
    upward = sorted(f"{unit} -> {imported} ({', '.join(sorted(files))})"
                    for unit, edges in graph.items() for imported, files in edges.items()
                    if row[imported] < row[unit])
    assert upward == []
    try:
        TopologicalSorter({u: set(edges) for u, edges in graph.items()}).prepare()
    except CycleError as e:
        raise AssertionError(f"import cycle between units: {e.args[1]}") from None


def test_the_documented_arrows_are_the_code_s():
    """docs/architecture.md's table of arrows: each unit with the units above the foundation
    row that it imports."""
    def name(unit: str) -> str:
        return f"`{unit}/`" if (SRC / unit).is_dir() else f"`{unit}.py`"

    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    table = doc.split("| module | imports |\n|---|---|\n", 1)[1].split("\n\n", 1)[0]
    documented = {line.split(" | ")[0][2:]: line.split(" | ")[1][:-2]
                  for line in table.splitlines()}
    graph, foundation = _unit_imports(), ROWS[-1]
    code = {name(unit): ", ".join(name(u) for u in sorted(edges) if u not in foundation) or "-"
            for unit, edges in graph.items() if unit not in foundation}
    assert documented == code


def test_the_inference_side_imports_nothing_of_the_training_side():
    graph = _unit_imports()
    below = {u for units in ROWS[3:] for u in units}
    found = sorted(f"{unit} -> {imported} ({', '.join(sorted(files))})"
                   for unit in (*INFERENCE, *below) for imported, files in graph[unit].items()
                   if imported in TRAINING)
    assert found == []


def test_the_inference_side_does_not_import_the_trainer(fresh_python):
    """Nor any other module of the training side, ``imgcls.engine`` included."""
    training = tuple(f"imgcls.{unit}" for unit in TRAINING)
    code = ("import sys, imgcls, imgcls.serve.app, imgcls.export, imgcls.prediction, "
            "imgcls.evaluation, imgcls.explain, imgcls.audit; imgcls.load; "
            f"print(sorted(m for m in sys.modules if m.startswith({training!r})))")
    assert fresh_python(code) == "[]"


def test_files_and_functions_stay_small():
    long_files, long_functions = [], []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > 450:
            long_files.append(path.name)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.end_lineno - node.lineno + 1 > 90:
                    long_functions.append(f"{path.name}:{node.name}")
    assert long_files == [] and long_functions == []


def test_no_module_shadows_a_function_of_the_api(fresh_python):
    """Importing a submodule binds it on the package: the modules behind imgcls.train,
    evaluate and predict have other names, so the functions stay functions."""
    code = ("import imgcls.training, imgcls.evaluation, imgcls.prediction, imgcls, inspect; "
            "print(all(inspect.isfunction(getattr(imgcls, n)) "
            "for n in ('train', 'evaluate', 'predict')))")
    assert fresh_python(code) == "True"
