"""The algorithm core imports torch and the standard library only, and nothing else of the package."""

import ast
import pathlib
import subprocess
import sys

import reinforcepp

PACKAGE = pathlib.Path(reinforcepp.__file__).parent
STDLIB = set(sys.stdlib_module_names)


def imported_roots(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


def test_algos_modules_import_only_torch_and_stdlib():
    files = sorted((PACKAGE / "algos").glob("*.py"))
    assert files
    for path in files:
        foreign = {root for root in imported_roots(path) if root not in STDLIB | {"torch", "__future__"}}
        assert not foreign, f"{path.name} imports {foreign}"


def loaded_after(statement):
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_importing_algos_pulls_in_no_other_part_of_the_package():
    loaded = loaded_after("import reinforcepp.algos")
    ours = {m for m in loaded if m.startswith("reinforcepp.") and not m.startswith("reinforcepp.algos")}
    assert not ours
    assert not loaded & {"transformers", "pydantic", "yaml", "vllm", "ray"}
