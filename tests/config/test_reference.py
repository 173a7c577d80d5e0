"""docs/config.md: generated from the schema and the checks, complete, and never stale."""

import inspect
from pathlib import Path

from reinforcepp.algos import GROUP_ESTIMATORS
from reinforcepp.config import Config, LoRAConfig, checks
from reinforcepp.config.reference import REGENERATE, main, render, rows

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "config.md"


def leaf_keys(data, prefix=""):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from leaf_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def row(key):
    return next(r for r in rows() if r.key == key)


def test_docs_config_md_is_current(capsys):
    # The command the failure prints runs main(): `python -m reinforcepp.config.reference`.
    assert REGENERATE == "python -m reinforcepp.config.reference > docs/config.md"
    main()
    printed = capsys.readouterr().out
    assert printed == render()
    assert DOC.read_text() == printed, f"docs/config.md is stale; regenerate it: {REGENERATE}"


def test_every_key_has_a_row_with_a_description():
    lora = [f"model.lora.{key}" for key in LoRAConfig.model_fields]  # an optional section: off by default
    documented, doc = {r.key: r for r in rows()}, render()
    for key in [*leaf_keys(Config().model_dump()), *lora]:
        assert key in documented, key
        assert documented[key].description, f"{key}: give the field a description in schema.py"
        assert (f"# `{key}`\n" if documented[key].section else f"| `{key}` |") in doc


def test_types_and_defaults_read_as_yaml():
    assert (row("rollout.top_p").type, row("rollout.top_p").default) == ("float in (0, 1]", "1.0")
    assert (row("algo.loss.dual_clip").type, row("algo.loss.dual_clip").default) == ("float > 1, or null", "null")
    assert row("actor.optim.betas").type == "[float in [0, 1), float in [0, 1)]"
    assert row("actor.optim.betas").default == "[0.9, 0.95]"
    assert row("algo.kl.estimator").type == "one of `k1`, `k2`, `k3`"
    assert row("reward.function").type == "str or callable (Python API), or null"
    assert (row("model.policy").default, row("eval.ks").default) == ('""', "[1]")
    assert row("model.lora").type == "section, or null (off)"


def test_units_are_stated_where_users_trip():
    assert row("rollout.batch_size").description.startswith("Prompts (not samples) per RL step")
    assert row("train.batch_size").description.startswith("Samples (completions, not prompts) per optimizer step")
    assert "`rollout.batch_size` counts **prompts**" in render()


def test_every_check_is_run_and_documented_in_words():
    defined = {obj for name, obj in vars(checks).items()
               if inspect.isfunction(obj) and name.startswith("_") and obj.__module__ == checks.__name__}
    assert defined == set(checks.CHECKS) | set(checks.WARNINGS), "add the check to CHECKS or WARNINGS"
    doc = render()
    for check in defined:
        assert check.__doc__, f"{check.__name__}: state its rules in its docstring"
        for paragraph in inspect.cleandoc(check.__doc__).split("\n\n"):
            assert "- " + " ".join(paragraph.split()) in doc
    assert all(name in checks._group_sampling.__doc__ for name in GROUP_ESTIMATORS)
