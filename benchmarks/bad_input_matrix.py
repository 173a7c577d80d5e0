"""The bad-input matrix as a table: each case of tests/reliability/test_bad_inputs.py, its exit code and the one
line it printed (temp paths shown as $T), for docs/reliability.md. The test asserts what the table shows.

Usage: .venv/bin/python benchmarks/bad_input_matrix.py   (~30 s: one tiny 3-step run, then the cases)
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "reliability"), str(ROOT / "tests")]

import test_bad_inputs as matrix  # noqa: E402
from conftest import PROMPTS  # noqa: E402

from _common import md_table, print_header  # noqa: E402
from reinforcepp.cli import main as cli_main  # noqa: E402
from reinforcepp.testing import save_tiny_checkpoint  # noqa: E402


def run_case(case: matrix.Case, ctx: matrix.Ctx) -> tuple[int, str]:
    argv = case.build(ctx)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli_main(argv)
    errors = [line for line in err.getvalue().splitlines() if line.startswith("error: ")]
    return rc, errors[0] if len(errors) == 1 else err.getvalue()


def main() -> None:
    print_header("The bad-input matrix")
    base = Path(tempfile.mkdtemp(prefix="bad-inputs-"))
    try:
        model = save_tiny_checkpoint(base / "model")
        prompts = base / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": p, "label": str(i)}) + "\n" for i, p in enumerate(PROMPTS)))
        (base / "trained").mkdir()
        with contextlib.redirect_stdout(io.StringIO()):
            trained = matrix.finished_run(base / "trained", model, prompts)
        rows = []
        for i, (name, case) in enumerate(matrix.CASES.items()):
            (base / f"case{i}").mkdir()
            rc, line = run_case(case, matrix.Ctx(model=model, prompts=prompts, tmp=base / f"case{i}", trained=trained))
            rows.append([name, rc, "`" + line.replace(str(base), "$T").replace("|", "\\|") + "`"])
    finally:
        shutil.rmtree(base)
    print(md_table(["bad input", "exit", "stderr"], rows))
    ok = sum(row[1] == 2 and row[2].startswith("`error: ") for row in rows)
    print(f"\n{ok} of {len(rows)} exit 2 with one error line")


if __name__ == "__main__":
    main()
