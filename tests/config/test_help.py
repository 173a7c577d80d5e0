"""`--help` of every subcommand that takes config keys lists its common keys and points to `reinforcepp config`
and docs/config.md."""

import re

import pytest

from reinforcepp.cli import main
from reinforcepp.config.help import COMMON_KEYS
from reinforcepp.config.reference import rows


def help_text(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main([*args, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def subcommands(capsys):
    return re.search(r"\{([a-z,-]+)\}", help_text(capsys)).group(1).split(",")


def test_every_subcommand_taking_config_keys_lists_them(capsys):
    takes_keys = [name for name in subcommands(capsys) if "KEY=VALUE" in help_text(capsys, name)]
    assert set(takes_keys) == set(COMMON_KEYS)
    for name in takes_keys:
        text = help_text(capsys, name)
        listed = re.findall(r"^  ([a-z_.]+) {2,}", text.split("common keys")[1], flags=re.M)
        assert listed == list(COMMON_KEYS[name]), name
        assert "reinforcepp config [--config PRESET|FILE]" in text and "docs/config.md" in text


def test_common_keys_are_schema_keys_with_their_defaults(capsys):
    known = {row.key: row for row in rows() if row.section is None}
    assert {key for keys in COMMON_KEYS.values() for key in keys} <= set(known)
    text = help_text(capsys, "train")
    assert re.search(r"rollout\.batch_size +Prompts \(not samples\) per RL step", text)
    assert re.search(r"train\.batch_size +Samples \(completions, not prompts\)", text)
    assert "[256]" in text and "[5e-07]" in text


def test_presets_help_points_to_config_and_the_reference(capsys):
    text = help_text(capsys, "presets")
    assert "reinforcepp config --config NAME" in text and "docs/config.md" in text
