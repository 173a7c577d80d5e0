"""Seeing what a run does: sample completions (samples.jsonl, TensorBoard's text tab, the trackers, the report),
the wandb and trackio trackers (fake modules that record their calls: neither package is installed here),
report.html written by `train` itself, and the final export's dtype. One short GRPO run serves most tests."""

from __future__ import annotations

import json
import math
import re
import sys
import types
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reinforcepp.cli import main
from reinforcepp.config import ConfigError, load_config
from reinforcepp.report import run_page
from reinforcepp.rewards.toy import target_char_share
from reinforcepp.train.loop import train
from reinforcepp.train.samples import COLUMNS
from reinforcepp.train.trackers import require_trackers

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class FakeTracker(types.ModuleType):
    """A stand-in for wandb / trackio: init, log, Table, finish, each call recorded."""

    def __init__(self, name: str):
        super().__init__(name)
        self.calls: list[tuple[str, object]] = []
        module = self

        class Table:
            def __init__(self, columns, data):
                self.columns, self.data = columns, data

        self.Table = Table

        def init(**kwargs):
            module.calls.append(("init", kwargs))

        def log(data, step):
            module.calls.append(("log", (step, data)))

        def finish():
            module.calls.append(("finish", None))

        self.init, self.log, self.finish = init, log, finish

    def logged(self) -> list[tuple[int, dict]]:
        return [args for name, args in self.calls if name == "log"]


def base_overrides(tiny_dir, prompt_file, out: Path) -> list[str]:
    return [f"model.policy={tiny_dir}", f"data.prompts={prompt_file}", f"data.eval_prompts={prompt_file}",
            "reward.function=reinforcepp.rewards.toy:target_char_share", "rollout.batch_size=2",
            "rollout.n_samples_per_prompt=2", "rollout.max_new_tokens=6", "train.batch_size=4",
            "train.micro_batch_size=2", "actor.optim.lr=1e-3", "log.progress=false", f"output_dir={out}"]


@pytest.fixture(scope="module")
def observed(tiny_dir, prompt_file, tmp_path_factory):
    """3 GRPO steps, evaluation at 0, 2 and 3, samples every 2 steps (and at the last), both trackers faked;
    records the metrics lines there were at each report.html write."""
    out = tmp_path_factory.mktemp("observed") / "run"
    fakes = {name: FakeTracker(name) for name in ("wandb", "trackio")}
    reports: list[int] = []
    real_write = run_page.write_run_report

    def counting_write(run_dir, **kwargs):
        reports.append(len((Path(run_dir) / "metrics.jsonl").read_text().splitlines()))
        return real_write(run_dir, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        for name, fake in fakes.items():
            patch.setitem(sys.modules, name, fake)
        patch.setattr(run_page, "write_run_report", counting_write)
        cfg = load_config("grpo", [*base_overrides(tiny_dir, prompt_file, out), "train.num_steps=3",
                                   "train.eval_every=2", "log.samples_every=2", "log.samples_count=2",
                                   "log.wandb=true", "log.trackio=true", "ckpt.final_dtype=bfloat16"])
        final = train(cfg)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return types.SimpleNamespace(cfg=cfg, out=out, final=final, fakes=fakes, reports=reports, samples=samples)


def metrics_by_step(out: Path) -> dict[int, dict]:
    """metrics.jsonl as {step: its scalars}."""
    records = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    return {r.pop("step"): r for r in records}


# ---------------------------------------------------------------- sample completions


def test_samples_every_n_steps_and_at_the_last(observed):
    # steps 2 (every 2) and 3 (the last); 2 prompts x 2 samples each
    assert [r["step"] for r in observed.samples] == [2] * 4 + [3] * 4
    assert [r["sample"] for r in observed.samples] == [0, 1] * 4
    assert all(set(r) == set(COLUMNS) for r in observed.samples)


def test_sample_rewards_are_the_rewards_of_the_completion_texts(observed):
    for row in observed.samples:
        assert row["length"] >= len(row["completion"])  # a character tokenizer: one token per character (+ EOS)
        assert row["reward"] == pytest.approx(target_char_share([row["completion"]])[0], abs=1e-6)


def test_sample_advantages_are_grpo_of_the_pairs(observed):
    # GRPO with 2 samples: (r - mean) / (unbiased std + 1e-6) = +-1/sqrt(2), or 0 when both rewards are equal
    rows = observed.samples
    for first, second in zip(rows[::2], rows[1::2]):
        assert first["prompt_index"] == second["prompt_index"]
        if first["reward"] == second["reward"]:
            assert first["advantage"] == second["advantage"] == 0.0
        else:
            sign = math.copysign(1.0, first["reward"] - second["reward"])
            assert first["advantage"] == pytest.approx(sign / math.sqrt(2), abs=1e-4)
            assert second["advantage"] == pytest.approx(-first["advantage"], abs=1e-6)


def test_samples_reach_tensorboards_text_tab(observed):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(observed.out / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    texts = events.Tensors("samples/text_summary")
    assert [t.step for t in texts] == [2, 3]
    table = texts[-1].tensor_proto.string_val[0].decode()
    assert table.startswith("| prompt | completion | reward | advantage | length |")
    last = observed.samples[-1]
    assert last["completion"].replace("|", "\\|").replace("\n", "⏎") in table


# ---------------------------------------------------------------- trackers


@pytest.mark.parametrize("name", ["wandb", "trackio"])
def test_trackers_get_every_scalar_and_the_sample_tables(observed, name):
    fake = observed.fakes[name]
    kind, init = fake.calls[0]
    assert kind == "init" and init["project"] == "reinforcepp" and init["name"] == "run"
    assert init["config"]["model"]["policy"] == observed.cfg.model.policy
    if name == "wandb":
        assert init["dir"] == str(observed.out)
    assert fake.calls[-1] == ("finish", None)
    scalars = {}
    tables = {}
    for step, data in fake.logged():
        if "samples" in data:
            tables[step] = data["samples"]
        else:
            scalars.setdefault(step, {}).update(data)
    assert scalars == metrics_by_step(observed.out)  # the same numbers as metrics.jsonl (and TensorBoard)
    assert sorted(tables) == [2, 3]
    assert tables[3].columns == list(COLUMNS)
    assert [dict(zip(COLUMNS, row)) for row in tables[2].data + tables[3].data] == observed.samples


def test_a_missing_tracker_package_names_the_extra(monkeypatch, tiny_dir, prompt_file, tmp_path):
    monkeypatch.setitem(sys.modules, "trackio", None)  # import trackio raises ImportError
    cfg = load_config("grpo", [*base_overrides(tiny_dir, prompt_file, tmp_path / "run"), "log.trackio=true"])
    with pytest.raises(ConfigError, match=r"log.trackio: needs the trackio package .*pip install 'reinforcepp\[trackio\]'"):
        require_trackers(cfg)


def test_a_missing_tracker_package_stops_train_in_one_line_before_loading(monkeypatch, capsys, tiny_dir,
                                                                          prompt_file, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)
    loads = []
    monkeypatch.setattr("reinforcepp.train.run.load_causal_lm", lambda *a, **k: loads.append(a))
    code = main(["train", "--config", "grpo", *base_overrides(tiny_dir, prompt_file, tmp_path / "run"),
                 "log.wandb=true"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not loads
    assert len(err) == 1 and err[0].startswith("error: log.wandb: needs the wandb package")
    assert "pip install 'reinforcepp[wandb]'" in err[0]


# ---------------------------------------------------------------- report.html


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.links += [(tag, value) for name, value in attrs if name in ("src", "href") and value is not None]


def test_train_writes_the_report_after_each_evaluation_and_at_the_end(observed):
    # metrics.jsonl lines at each write: step 0's evaluation, step 2's, step 3's, then after the final export
    assert observed.reports == [1, 3, 4, 4]
    assert f"<code>{observed.final}</code>" in (observed.out / "report.html").read_text()


def test_report_is_one_self_contained_file_with_the_samples(observed):
    import base64

    html = (observed.out / "report.html").read_text()
    parser = _Links()
    parser.feed(html)
    assert parser.links and all(value.startswith("data:") for _, value in parser.links), parser.links
    for _, value in parser.links:
        assert base64.b64decode(value.split(",", 1)[1])[:8] == PNG_MAGIC
    assert "<h2>Sample completions</h2>" in html
    assert "<details open><summary>step 3</summary>" in html and "<summary>step 2</summary>" in html
    import html as html_lib

    for row in observed.samples:
        assert html_lib.escape(row["completion"]) in html


# ---------------------------------------------------------------- the final export's dtype


def test_final_dtype_bfloat16_exports_a_bfloat16_model(observed):
    from transformers import AutoModelForCausalLM

    weights = load_file(str(observed.final / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    assert json.loads((observed.final / "config.json").read_text())["dtype"] == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(observed.final, dtype="auto")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_in_dtype_casts_a_copy_and_keeps_ties(tiny_dir):
    from reinforcepp.models import in_dtype, load_causal_lm

    model = load_causal_lm(tiny_dir)
    assert in_dtype(model, "auto") is model and in_dtype(model, "float32") is model
    half = in_dtype(model, "bfloat16")
    assert next(model.parameters()).dtype == torch.float32  # the trained model is untouched
    for (name, p), (_, q) in zip(model.named_parameters(), half.named_parameters()):
        assert q.dtype == torch.bfloat16 and torch.equal(q, p.to(torch.bfloat16)), name
    if model.config.tie_word_embeddings:
        assert half.lm_head.weight is half.model.embed_tokens.weight


# ---------------------------------------------------------------- the reference: one load of the policy


def _count_causal_lm_loads(monkeypatch) -> list[str]:
    from reinforcepp.models import loading

    loads: list[str] = []
    real = loading.load_pretrained

    def counting(auto_class, path, **kwargs):
        if kwargs.get("what") == "causal LM":
            loads.append(str(path))
        return real(auto_class, path, **kwargs)

    monkeypatch.setattr(loading, "load_pretrained", counting)
    return loads


def test_the_reference_is_a_frozen_copy_of_the_loaded_policy(monkeypatch, capsys, tiny_dir, prompt_file, tmp_path):
    from reinforcepp.train.run import build_run

    loads = _count_causal_lm_loads(monkeypatch)
    run = build_run(load_config("reinforce_pp", [*base_overrides(tiny_dir, prompt_file, tmp_path / "a"), "threads=1"]))
    assert loads == [str(tiny_dir)]  # one load (for a GGUF file: one dequantization) serves both
    assert "threads: 1 (threads; set threads=N to change)" in capsys.readouterr().out
    reference = run.reference.model
    assert reference is not run.policy
    for (name, p), (_, r) in zip(run.policy.named_parameters(), reference.named_parameters()):
        assert torch.equal(p, r) and p.data_ptr() != r.data_ptr() and not r.requires_grad, name
    # a bfloat16 reference of a float32 policy is loaded in bfloat16 (a copy would hold both precisions at once)
    loads.clear()
    build_run(load_config("reinforce_pp", [*base_overrides(tiny_dir, prompt_file, tmp_path / "b"),
                                           "model.reference_dtype=bfloat16"]))
    assert loads == [str(tiny_dir)] * 2


# ---------------------------------------------------------------- `reinforcepp eval` writes its completions


def test_eval_writes_every_completion_beside_its_scores(tiny_dir, prompt_file, tmp_path):
    from reinforcepp.eval.command import EVAL_SAMPLES, evaluate_model

    cfg = load_config(None, [*base_overrides(tiny_dir, prompt_file, tmp_path / "eval"), "eval.samples_per_prompt=2"])
    results = evaluate_model(cfg)
    rows = [json.loads(line) for line in (tmp_path / "eval" / EVAL_SAMPLES).read_text().splitlines()]
    scores = json.loads((tmp_path / "eval" / "eval.json").read_text())["results"]
    assert [r["mode"] for r in scores] == ["greedy", "sampled"] and "completions" not in scores[0]
    assert [r["mode"] for r in rows] == ["greedy"] * 8 + ["sampled"] * 16
    for result in results:
        mine = [r for r in rows if r["mode"] == result.mode]
        assert sum(r["reward"] for r in mine) / len(mine) == pytest.approx(result.reward_mean)
        for row in mine:
            assert row["reward"] == pytest.approx(target_char_share([row["completion"]])[0])
            assert row["passed"] == (row["reward"] >= cfg.eval.pass_threshold)


# ---------------------------------------------------------------- resume: samples of redone steps are dropped


def test_a_resumed_log_forgets_the_samples_of_the_steps_it_redoes(tmp_path):
    from reinforcepp.train.metrics import SAMPLES, MetricsLog

    (tmp_path / SAMPLES).write_text("".join(json.dumps({"step": s, "completion": "x"}) + "\n" for s in (2, 4, 6)))
    MetricsLog(tmp_path, tensorboard=False, progress=False, total_steps=6, start_step=4).close()
    assert [json.loads(line)["step"] for line in (tmp_path / SAMPLES).read_text().splitlines()] == [2, 4]
