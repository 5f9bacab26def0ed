"""The evaluation report: ONE self-contained HTML file (plots embedded as base64 PNG, CSS inline).

It is the KFP ``HTML`` artifact the KFP UI shows for the evaluate-and-register task, and it is logged to
the candidate's MLflow run (``evaluation/report.html``), so it opens the same from either place, offline.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from radpipe.reporting.findings import NOT_FOR_CLINICAL_USE, Findings, fmt, fmt_interval
from radpipe.reporting.plots import TITLES

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;margin:0;background:#f6f8fa}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:19px;margin:28px 0 10px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:16px;margin:18px 0 8px}
.sub{color:#57606a;margin:0 0 16px} code{background:#eef1f4;padding:1px 4px;border-radius:4px;font-size:12.5px}
.banner{padding:10px 14px;border-radius:6px;margin:12px 0;font-weight:600}
.passed{background:#dafbe1;border:1px solid #4ac26b} .failed{background:#ffebe9;border:1px solid #ff8182}
.warning{background:#fff8c5;border:1px solid #d4a72c;font-weight:400}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px 14px;min-width:130px}
.card b{display:block;font-size:20px} .card span{color:#57606a;font-size:12px}
table{border-collapse:collapse;background:#fff;margin:8px 0}
th,td{border:1px solid #d0d7de;padding:4px 9px;text-align:left}
th{background:#f0f3f6} td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{background:#fff;border:1px solid #d0d7de;border-radius:6px;margin:12px 0;padding:10px}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{color:#57606a;font-size:12.5px;margin-top:6px}
.ok{color:#1a7f37} .bad{color:#cf222e}
.card-md{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:4px 20px}
blockquote{border-left:4px solid #cf222e;margin:10px 0;padding:2px 12px;background:#fff5f5}
"""

CAPTIONS = {
    "confusion_matrix.png": "Rows are the true classes. Left: image counts; right: each row divided by its total, "
    "so the diagonal is each class's recall (sensitivity).",
    "roc_curves.png": "One class against the rest, from the predicted probability of that class.",
    "pr_curves.png": "Precision (positive predictive value) against recall per class; a dotted line is the "
    "precision of guessing (the class's share of the test split).",
    "reliability.png": "Test images binned by the probability of the predicted class: bars are how often those "
    "predictions were right. Bars below the diagonal: over-confident. ECE is the average gap, weighted by images.",
    "training_curves.png": "Per epoch of the chosen candidate. The dotted line marks the start of fine-tuning; the "
    "green line the epoch kept (lowest validation loss). End-to-end phases train on augmented images, so their "
    "training metrics run below what the same weights score on clean images.",
    "class_distribution.png": "Images per class in each split of the data set, after ingest's de-duplication.",
    "gradcam.png": "Where the model looked for the class it predicted (red: most). Green frames: correct; red "
    "frames: wrong, with the predicted class. The number is the predicted probability.",
}


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_e(c)}</td>' if i >= numeric_from else f"<td>{_e(c)}</td>" for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_markdown(text: str) -> str:
    """CommonMark with tables; raw HTML in the Markdown is escaped, not passed through."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def _cards(f: Findings) -> str:
    metrics = f.evaluation.metrics
    intervals = f.evaluation.intervals
    cards = []
    for key, label in (
        ("accuracy", "accuracy"),
        ("macro_f1", "macro-F1"),
        ("roc_auc_macro_ovr", "ROC AUC"),
        ("ece", "ECE"),
    ):
        if key not in metrics:
            continue
        ci = intervals.overall.get(key) if intervals else None
        extra = f" · CI {fmt_interval(ci)}" if ci else ""
        cards.append(f'<div class="card"><b>{fmt(metrics[key])}</b><span>test {label}{_e(extra)}</span></div>')
    cards.append(f'<div class="card"><b>{f.test_images}</b><span>test images</span></div>')
    return f'<div class="cards">{"".join(cards)}</div>'


def _gate(f: Findings) -> str:
    d = f.decision
    verdict = (
        f"Gate passed: <code>{_e(f.challenger_alias)}</code> moves to version {_e(f.version)}"
        if d.passed
        else f"Gate failed: version {_e(f.version)} is registered, but <code>{_e(f.challenger_alias)}</code> "
        "does not move to it"
    )
    items = "".join(
        f'<li class="{"ok" if c.passed else "bad"}">{"✔" if c.passed else "✘"} {_e(c.detail)}</li>' for c in d.checks
    )
    out = f'<div class="banner {d.verdict}">{verdict}</div><ul>{items}</ul>'
    rows = f.comparison()
    if rows:
        out += f"<h3>Against the {_e(f.champion.alias)} on the same test split</h3>"
        out += _table(
            ["metric", f"version {f.version}", f"{f.champion.alias} (version {f.champion.version})"],
            [(metric, fmt(ours), fmt(theirs)) for metric, ours, theirs in rows],
        )
    return out


def _per_class(f: Findings) -> str:
    level = f.interval_label
    headers = ["class", "images", "precision", level, "recall", level, "F1", level, "AUC"]
    rows = [
        (name, support, *(cell for score in scores for cell in score), auc)
        for name, support, scores, auc in f.per_class_rows()
    ]
    return _table(["metric", "value", level], f.overall_rows()) + _table(headers, rows)


def _figures(plots: Mapping[str, Path]) -> str:
    out = []
    for name, title in TITLES.items():
        if name not in plots:
            continue
        data = base64.b64encode(Path(plots[name]).read_bytes()).decode("ascii")
        out.append(
            f'<h3>{_e(title)}</h3><figure><img alt="{_e(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(CAPTIONS.get(name, ''))}</figcaption></figure>"
        )
    return "".join(out)


def build_report(f: Findings, model_card: str, plots: Mapping[str, Path]) -> str:
    warning = "".join(f'<div class="banner warning">{_e(note)}</div>' for note in f.limits()[:1] if f.test_images < 100)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(f.model_name)} version {_e(f.version)}: evaluation</title>
<style>{CSS}</style></head>
<body><main>
<h1>{_e(f.model_name)} version {_e(f.version)}</h1>
<p class="sub"><code>{_e(f.uri)}</code> · candidate <b>{_e(f.candidate)}</b> · MLflow run <code>{_e(f.run_id)}</code>
 · {_e(f.created)} · radpipe {_e(f.radpipe_version)}</p>
<blockquote>{render_markdown(NOT_FOR_CLINICAL_USE)}</blockquote>
<h2>Gate decision</h2>{_gate(f)}
<h2>Test metrics</h2>{_cards(f)}{warning}{_per_class(f)}
<h2>Plots</h2>{_figures(plots)}
<h2>Model card</h2><div class="card-md">{render_markdown(model_card)}</div>
</main></body></html>
"""
