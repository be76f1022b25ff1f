"""The layering that docs/architecture.md describes, checked: inference does not load the
training code, and no source file or function grows past what a reader can hold."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "imgcls"


def test_the_inference_side_does_not_import_the_trainer(fresh_python):
    code = ("import sys, imgcls, imgcls.serve.app, imgcls.export, imgcls.prediction, "
            "imgcls.evaluation, imgcls.explain, imgcls.audit; imgcls.load; "
            "print(sorted(m for m in sys.modules if m.startswith(('imgcls.engine.trainer', "
            "'imgcls.training', 'imgcls.ssl'))))")
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
