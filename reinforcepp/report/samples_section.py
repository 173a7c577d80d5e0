"""The report's sample completions (samples.jsonl): the newest step's table open, earlier steps folded."""

from __future__ import annotations

from . import html as h

MAX_STEPS = 10  # the newest steps shown: the page stays small however long the run


def samples_section(samples: list[dict]) -> str:
    """One table per logged step, newest first; empty when the run logged no samples."""
    if not samples:
        return ""
    by_step: dict[int, list[dict]] = {}
    for row in samples:
        by_step.setdefault(int(row["step"]), []).append(row)
    steps = sorted(by_step, reverse=True)
    note = ("The first prompts of the step's batch, each with all its completions: the raw reward (– where the reward "
            "function skipped the sample) and the advantage, the mean of the completion's token advantages.")
    parts = [h.note(note)]
    for i, step in enumerate(steps[:MAX_STEPS]):
        table = _step_table(by_step[step])
        summary = f"step {step}"
        parts.append(f"<details{' open' if i == 0 else ''}><summary>{h.esc(summary)}</summary>\n{table}\n</details>")
    if len(steps) > MAX_STEPS:
        parts.append(h.note(f"{len(steps) - MAX_STEPS} earlier step(s) are in samples.jsonl"))
    return h.section("Sample completions", *parts)


def _step_table(rows: list[dict]) -> str:
    head = "".join(f"<th>{h.esc(c)}</th>" for c in ("prompt", "completion", "reward", "advantage", "length"))
    body = []
    for row in rows:
        cut = "" if row.get("finished", True) else " (cut at max_new_tokens)"
        cells = [
            f"<td class=\"text\">{h.esc(row.get('prompt', ''))}</td>",
            f"<td class=\"text\">{h.esc(row.get('completion', ''))}</td>",
            f"<td class=\"num\">{h.esc(h.fmt(row.get('reward')))}</td>",
            f"<td class=\"num\">{h.esc(h.fmt(row.get('advantage')))}</td>",
            f"<td class=\"num\">{h.esc(str(row.get('length', '–')) + cut)}</td>",
        ]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"
