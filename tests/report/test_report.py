"""The run and comparison reports, on small synthetic run directories with numbers chosen by hand."""

from __future__ import annotations

import base64
import json
import math
import re
import subprocess
import sys
from pathlib import Path

from reinforcepp.report import write_compare_report, write_run_report
from reinforcepp.report.read import prompt_curves, read_metrics, sort_group_values

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(path: Path, records: list[dict], *, config: str = "algo: reinforce_pp\n", summary: dict | None = None,
              prompt_rows: list[dict] | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(config)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    if prompt_rows is not None:
        (path / "prompt_rewards.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prompt_rows))
    return path


def full_records(final_acc: float = 0.6, timings: tuple[float, ...] = (2.0, 2.0, 2.0)) -> list[dict]:
    """Step 0 holds only the starting evaluation; steps 1..n train; the last step evaluates again."""
    records = [{"step": 0, "eval/greedy/pass@1": 0.25, "eval/sampled/pass@1": 0.2, "eval_train/sampled/pass@1": 0.2,
                "eval/sampled/by_people/10/pass@1": 0.1, "eval/sampled/by_people/3/pass@1": 0.4}]
    for step, seconds in enumerate(timings, start=1):
        records.append({"step": step, "reward/mean": 0.3 + 0.1 * step, "reward/std": 0.2, "kl": 0.001 * step,
                        "kl/seq_k1": 0.01 * step, "response_length/mean": 100.0 + step, "actor/entropy": 0.8,
                        "timing/step": seconds, "timing/rollout": seconds / 2, "timing/experience": seconds / 4,
                        "timing/update": seconds / 4})
    records[-1].update({"eval/greedy/pass@1": final_acc + 0.05, "eval/sampled/pass@1": final_acc,
                        "eval_train/sampled/pass@1": final_acc + 0.2,
                        "eval/sampled/by_people/3/pass@1": final_acc + 0.2,
                        "eval/sampled/by_people/10/pass@1": final_acc - 0.2})
    return records


def prompt_rows() -> list[dict]:
    return [{"step": 1, "prompt": 0, "rewards": [0.0, 1.0]}, {"step": 2, "prompt": 1, "rewards": [1.0, 1.0]},
            {"step": 3, "prompt": 0, "rewards": [1.0, 1.0]}]


def img_sources(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def embedded(png: Path) -> str:
    """The src of an image that holds the PNG file itself."""
    return 'src="data:image/png;base64,' + base64.b64encode(png.read_bytes()).decode() + '"'


def shown_plots(page: Path) -> list[str]:
    """The names of the plots (files in plots/) the page embeds, in page order."""
    html = page.read_text()
    found = [(html.find(embedded(png)), png.stem) for png in (page.parent / "plots").glob("*.png")]
    return [name for position, name in sorted(found) if position >= 0]


def assert_valid_pngs(page: Path) -> None:
    """Every image is embedded (the page is one file that can be mailed) and is a real PNG."""
    sources = img_sources(page.read_text())
    assert sources
    for src in sources:
        assert src.startswith("data:image/png;base64,"), src[:40]
        data = base64.b64decode(src.split(",", 1)[1])
        assert data[:8] == PNG_MAGIC and len(data) > 1000


# ---------------------------------------------------------------- the package stays cheap to import


def test_importing_the_package_does_not_import_matplotlib():
    code = "import sys, reinforcepp.report; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- reading


def test_read_metrics_merges_lines_of_one_step_and_sorts(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 2, "kl": 0.5}\n{"step": 1, "kl": 0.1}\n{"step": 2, "eval/sampled/pass@1": 0.75}\n{"st')
    records = read_metrics(path)
    assert records == [{"step": 1, "kl": 0.1}, {"step": 2, "kl": 0.5, "eval/sampled/pass@1": 0.75}]


def test_group_values_sort_numerically_when_all_integers():
    assert sort_group_values(["10", "3", "8"]) == ["3", "8", "10"]
    assert sort_group_values(["hard", "easy"]) == ["easy", "hard"]


def test_prompt_curves_carry_the_last_value_forward():
    steps, prompts, matrix = prompt_curves(prompt_rows())
    assert steps == [1, 2, 3] and prompts == [0, 1]
    assert matrix[0] == [0.5, 0.5, 1.0]
    assert math.isnan(matrix[1][0]) and matrix[1][1:] == [1.0, 1.0]
    _, chosen, _ = prompt_curves(prompt_rows(), max_prompts=1)
    assert chosen == [0]  # the most often sampled prompt


# ---------------------------------------------------------------- the run page


def test_run_report_shows_exact_before_after_numbers_and_plots(tmp_path):
    summary = {"title": "K&K run", "before": {"eval/sampled/pass@1": 0.2125, "eval/greedy/reward_mean": 0.5},
               "after": {"eval/sampled/pass@1": 0.4465, "eval/greedy/reward_mean": 0.375},
               "model_dir": "/models/final-policy", "wall_time_s": 90.0, "notes": ["a note"]}
    run = write_run(tmp_path / "run", full_records(), summary=summary, prompt_rows=prompt_rows())
    page = write_run_report(run)
    html = page.read_text()
    assert page == run / "report.html"
    assert "<title>K&amp;K run</title>" in html
    assert "/models/final-policy" in html and "1.5 min" in html and "a note" in html
    # before / after / change in points: (0.4465 - 0.2125) * 100 = 23.4, (0.375 - 0.5) * 100 = -12.5
    assert "<td class=\"num\">0.2125</td>" in html and "0.4465" in html and "+23.4 pts" in html
    assert "-12.5 pts" in html
    for name in ("reward", "kl", "kl_seq", "response_length", "entropy", "timing", "accuracy", "by_people", "prompts"):
        assert embedded(run / "plots" / f"{name}.png") in html, name
    assert_valid_pngs(page)
    assert all(alt for alt in re.findall(r'alt="([^"]*)"', html))
    # the final tables: last training step and last evaluation, exactly as logged
    assert "Training metrics at step 3" in html and "<td class=\"num\">0.6000</td>" in html
    assert "Last held-out evaluation (step 3)" in html and "0.6500" in html


def test_run_report_without_summary_compares_first_and_last_evaluation(tmp_path):
    run = write_run(tmp_path / "run", full_records(final_acc=0.55))
    (run / "final").mkdir()
    html = write_run_report(run, title="given title").read_text()
    assert "<h1>given title</h1>" in html
    assert str(run / "final") in html
    assert "First (step 0) and last (step 3)" in html
    # sampled pass@1 0.2 -> 0.55 is +35.0 points, greedy 0.25 -> 0.6 also +35.0
    assert "0.2000" in html and "0.5500" in html and "+35.0 pts" in html


def test_run_report_escapes_the_config(tmp_path):
    records = [{"step": 1, "reward/mean": 0.5}]
    run = write_run(tmp_path / "run", records, config="name: <script>alert('x')</script>\n")
    html = write_run_report(run).read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html


def test_run_report_with_few_metrics_skips_missing_plots(tmp_path):
    run = write_run(tmp_path / "run", [{"step": 1, "reward/mean": 0.5}, {"step": 2, "reward/mean": 0.7}])
    html = write_run_report(run).read_text()
    assert shown_plots(run / "report.html") == ["reward"] and len(img_sources(html)) == 1
    assert "held-out evaluation not measured in these runs" in html
    assert_valid_pngs(run / "report.html")


def test_run_report_of_an_empty_directory_does_not_crash(tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    html = write_run_report(run).read_text()
    assert "<h1>empty</h1>" in html and "not measured" in html and not img_sources(html)


def test_run_report_shows_sample_completions_escaped_newest_step_open(tmp_path):
    run = write_run(tmp_path / "run", [{"step": 1, "reward/mean": 0.5}])
    rows = [{"step": step, "prompt_index": 0, "sample": 0, "prompt": "2+2=", "completion": f"<b>{step}</b>\nok",
             "reward": 0.25 * step, "advantage": None if step == 1 else -0.5, "length": 7, "finished": step == 2}
            for step in (1, 2)]
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    html = write_run_report(run).read_text()
    assert "<h2>Sample completions</h2>" in html
    assert "<details open><summary>step 2</summary>" in html and "<details><summary>step 1</summary>" in html
    assert html.index("step 2</summary>") < html.index("step 1</summary>")
    assert "&lt;b&gt;2&lt;/b&gt;\nok" in html and "<b>2</b>" not in html
    assert "0.5000" in html and "-0.5000" in html and "7 (cut at max_new_tokens)" in html  # step 1 was cut


# ---------------------------------------------------------------- the comparison page


def test_compare_report_tables_hold_hand_computed_medians_ratios_and_means(tmp_path):
    a1 = write_run(tmp_path / "a1", full_records(0.5, (1.0, 2.0, 3.0)), prompt_rows=prompt_rows())
    a2 = write_run(tmp_path / "a2", full_records(0.7, (2.0, 4.0)), prompt_rows=prompt_rows())
    b1 = write_run(tmp_path / "b1", full_records(0.4, (3.0, 3.0, 5.0)) +
                   [{"step": 4, "perf/peak_rss_mb": 2048.0}])
    page = write_compare_report(tmp_path / "cmp", {"A": [a1, a2], "B<x>": [b1]}, title="A vs B")
    html = page.read_text()
    markdown = (tmp_path / "cmp" / "summary.md").read_text()
    # median s/step pools the seeds: A [1, 2, 3, 2, 4] -> 2.0, B [3, 3, 5] -> 3.0, ratio 1.50
    assert "1.50x A" in html and "1.50x A" in markdown and "1.00x A" in html
    assert "<td class=\"num\">2.0000</td>" in html and "<td class=\"num\">3.0000</td>" in html
    # final held-out sampled pass@1 of A: seeds 0.5 and 0.7 -> 0.6 ± 0.1414 (sample std)
    assert "0.6000 ± 0.1414" in html and "0.6000 ± 0.1414" in markdown
    # train - held-out gap of A: 0.8 - 0.6 = +20.0 pts
    assert "+20.0 pts" in html
    # by people, values sorted numerically: A at 3 people (0.7 + 0.9) / 2 = 0.8, at 10: (0.3 + 0.5) / 2 = 0.4;
    # average 0.6. B: 0.6 and 0.2, average 0.4
    assert "| A | 0.8000 | 0.4000 | 0.6000 |" in markdown
    assert "| B&lt;x&gt; |" not in markdown and "| B<x> | 0.6000 | 0.2000 | 0.4000 |" in markdown
    assert markdown.index("| label | 3 | 10 | average |") > 0
    # peak memory shown because one run logged it
    assert "peak memory (MB)" in html and "2048" in html
    assert "B&lt;x&gt;" in html and "B<x>" not in html
    for name in ("reward_vs_kl", "reward", "response_length", "accuracy", "prompts", "by_people", "timing"):
        assert embedded(tmp_path / "cmp" / "plots" / f"{name}.png") in html, name
    assert_valid_pngs(page)


def test_compare_report_with_missing_metrics_says_not_measured(tmp_path):
    a = write_run(tmp_path / "a", [{"step": 1, "reward/mean": 0.25}, {"step": 2, "reward/mean": 0.5}])
    b = write_run(tmp_path / "b", [{"step": 1, "reward/mean": 0.75}])
    html = write_compare_report(tmp_path / "cmp", {"A": [a], "B": [b]}).read_text()
    for what in ("held-out accuracy", "per-prompt rewards", "accuracy by group", "wall time"):
        assert f"{what}: not measured in these runs" in html, what
    assert shown_plots(tmp_path / "cmp" / "report.html") == ["reward"] and len(img_sources(html)) == 1
    # final reward is each run's last value
    assert "<td class=\"num\">0.5000</td>" in html and "<td class=\"num\">0.7500</td>" in html
    assert "not measured in these runs" in (tmp_path / "cmp" / "summary.md").read_text()
