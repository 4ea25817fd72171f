"""Output of a run: raw JSON, the markdown table (docs/benchmarks.md) and PNG plots."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import breakdown
from results import NARWHAL, Results, Row

BEGIN = "<!-- bench:begin (hack/bench writes between these markers) -->"
END = "<!-- bench:end -->"


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "ms":
        return f"{value:.1f}"
    if unit == "s":
        return f"{value:.2f}"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _status(row: Row) -> str:
    """Whether Narwhal meets the issue's bound for this row (a ratio target and/or an absolute limit)."""
    verdicts = []
    ratio = row.ratio()
    if row.target is not None:
        # A throughput row's target is a floor (issue 21: "keep ≥ 4×"), a time or memory row's a ceiling.
        sign = "≤" if row.lower_is_better else "≥"
        if ratio is None:
            verdicts.append(f"target {sign} {row.target:g}×: n/a")
        else:
            met = ratio <= row.target if row.lower_is_better else ratio >= row.target
            verdicts.append(f"target {sign} {row.target:g}×: {'met' if met else '**missed**'}")
    if row.limit is not None:
        mine = row.p50(NARWHAL)
        if mine is None:
            verdicts.append(f"target ≤ {row.limit:g} {row.unit}: n/a")
        else:
            verdicts.append(f"target ≤ {row.limit:g} {row.unit}: {'met' if mine <= row.limit else '**missed**'}")
    return "; ".join(verdicts)


def _cell(row: Row, system: str) -> tuple[str, str]:
    if system in row.errors and not row.samples.get(system):
        return f"n/a (error: {row.errors[system].replace('|', '/')})", ""
    p50 = _fmt(row.p50(system), row.unit)
    failures = row.failures.get(system)
    if failures:
        n = len(row.samples.get(system, [])) + len(failures)
        p50 += f" <br><sub>{len(failures)} of {n} failed: {failures[0].replace('|', '/')}</sub>"
    return p50, _fmt(row.p95(system), row.unit)


def markdown(results: Results, meta: dict[str, Any]) -> str:
    rows = results.rows
    lines = [
        f"Run {meta['date']} on {meta['host']} ({meta['cpus']} CPUs), mode `{meta['mode']}`, "
        f"{meta['duration_s']:.0f} s. Versions: {meta['versions']}.",
        "",
        "Ratio = Narwhal p50 / anchor p50 (below 1 is faster for times and smaller for memory; for "
        "throughput above 1 is faster). p95 is nearest-rank.",
        "",
    ]
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    for group, members in groups.items():
        anchor = members[0].anchor
        lines += [
            f"### {group} (anchor: {anchor})",
            "",
            f"| benchmark | unit | Narwhal p50 | Narwhal p95 | {anchor} p50 | {anchor} p95 | ratio | target |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for row in members:
            n50, n95 = _cell(row, NARWHAL)
            a50, a95 = _cell(row, row.anchor)
            ratio = row.ratio()
            name = row.name + (f" <br><sub>{row.note}</sub>" if row.note else "")
            lines.append(f"| {name} | {row.unit} | {n50} | {n95} | {a50} | {a95} | "
                         f"{'–' if ratio is None else f'{ratio:.2f}×'} | {_status(row)} |")
        lines.append("")
    for title, found in results.breakdown.items():
        lines += [f"### Where the time goes: {title} (narwhald's own metrics)", "",
                  breakdown.markdown(found["calls"], found["unit"]), ""]
    return "\n".join(lines)


def write_json(path: Path, results: Results, meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"meta": meta, "results": results.to_json(), "breakdown": results.breakdown,
            "memory_profiles": results.profiles}
    path.write_text(json.dumps(data, indent=1) + "\n")


def update_doc(doc: Path, table: str) -> None:
    """Replace the generated section of ``doc`` (between the markers), keeping the hand-written prose."""
    text = doc.read_text() if doc.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def plots(out_dir: Path, rows: list[Row]) -> list[Path]:
    """latency.png: per-call distributions side by side; ratios.png: Narwhal/anchor p50 with targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    latency = [r for r in rows if r.unit == "ms" and r.samples]
    if latency:
        cols = 3
        nrows = (len(latency) + cols - 1) // cols
        fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
        for ax, row in zip(axes.flat, latency, strict=False):
            systems = [s for s in (NARWHAL, row.anchor) if row.samples.get(s)]
            ax.boxplot([row.samples[s] for s in systems], whis=(5, 95), showfliers=False)
            ax.set_xticks(range(1, len(systems) + 1), systems)
            ax.set_title(row.name, fontsize=9)
            ax.set_ylabel("ms")
            ax.set_ylim(bottom=0)
        for ax in list(axes.flat)[len(latency):]:
            ax.axis("off")
        fig.suptitle("Latency per call (box: p25–p75, line: p50, whiskers: p5–p95; samples beyond not drawn)")
        fig.tight_layout()
        path = out_dir / "latency.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    rated = [r for r in rows if r.ratio() is not None]
    if rated:
        fig, ax = plt.subplots(figsize=(9, 0.38 * len(rated) + 1.2))
        labels = [f"{r.name} (vs {r.anchor})" for r in rated]
        values = [r.ratio() or 0.0 for r in rated]
        colors = []
        for r, v in zip(rated, values, strict=True):
            better = v <= 1.0 if r.lower_is_better else v >= 1.0
            colors.append("tab:green" if better else "tab:red")
        ax.barh(range(len(rated)), values, color=colors)
        for i, r in enumerate(rated):
            if r.target is not None:
                ax.plot([r.target, r.target], [i - 0.4, i + 0.4], color="black", linewidth=2)
            ax.text(values[i], i, f" {values[i]:.2f}×", va="center", fontsize=8)
        ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_xlim(0, max(values) * 1.15)
        ax.set_yticks(range(len(rated)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("Narwhal p50 / anchor p50 (black tick: target; green: Narwhal better)")
        fig.tight_layout()
        path = out_dir / "ratios.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written
