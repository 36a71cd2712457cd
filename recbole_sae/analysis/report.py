"""Report writers: JSON, markdown, a plot and a static HTML browser of the latents.

``write_json`` is the JSON writer of every report of the project (``markdown_table``, re-exported
here, lives in :mod:`recbole_sae.tables`); ``write_interpretation_report`` renders the dict
returned by :func:`recbole_sae.analysis.interpretation.interpret`.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from recbole_sae.fileio import write_text_atomic
from recbole_sae.tables import fmt, markdown_table

__all__ = [
    "to_jsonable",
    "write_json",
    "markdown_table",
    "write_interpretation_report",
    "ratio_flags",
    "fidelity_flags",
    "bar_axis_top",
]

PathLike = Union[str, os.PathLike]

N_GAIN_ROWS = 15
N_EXAMPLE_LATENTS = 20
N_PLOT_VALUES = 25
N_MD_ITEMS = 5
RECOVERED_FLAG = 0.9  # NDCG recovered below this is flagged (below what the default SAE recovers: README)


# --------------------------------------------------------------------------- generic helpers
def to_jsonable(obj: Any) -> Any:
    """A copy of ``obj`` that ``json`` can write: tensors and numpy values become lists
    and numbers, paths and other objects strings, tuples lists, non-finite floats ``None``
    (strict JSON has no NaN or Infinity)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    tolist = getattr(obj, "tolist", None)  # torch tensors, numpy arrays and scalars
    if callable(tolist):
        return to_jsonable(tolist())
    return str(obj)


def write_json(obj: Any, path: PathLike, indent: Optional[int] = 2) -> Path:
    """Write ``obj`` as strict JSON (see ``to_jsonable``), atomically.

    The text goes to a temporary file in the same folder, which then replaces
    ``path``, so a reader never sees a half-written file.  Creates the folder.
    Returns the path.
    """
    path = Path(path)
    text = json.dumps(to_jsonable(obj), indent=indent, ensure_ascii=False, allow_nan=False)
    return write_text_atomic(text + "\n", path)


# --------------------------------------------------------------------------- interpretation report
def _example_latents(latents: List[dict], n: int) -> List[dict]:
    """The ``n`` latents with the strongest best correlation (labelled ones first)."""

    def strength(lat: dict) -> float:
        corrs = [bv["corr"] for bv in lat.get("best_values", []) if bv.get("corr") is not None]
        return max(corrs) if corrs else -math.inf

    return sorted(latents, key=lambda lat: (-strength(lat), lat["id"]))[:n]


HELD_OUT_HEADERS = ("raw held-out corr", "SAE held-out corr", "ratio held-out")


def _held_out_cells(summary: Mapping[str, Any]) -> list:
    """The held-out means and ratio of a summary or frequency group (``None`` where not computed)."""
    return [summary.get(k) for k in ("raw_mean_held_out_corr", "sae_mean_held_out_corr", "ratio_held_out")]


RATIO_MEANINGS = {
    "ratio_corr": (
        "ratio |corr|",
        "the best SAE latent per value correlates less with the value than the best "
        "raw hidden dimension: the SAE does not separate these values better than the raw state does",
    ),
    "ratio_held_out": (
        "held-out ratio",
        "with each value's best unit chosen on half of the items and scored on the "
        "other half, the best SAE latent tracks the value less well than the best raw dimension: "
        "what the in-sample ratio shows comes from picking the best of many latents or from latents "
        "that recognise particular items, not from latents that stand for the value",
    ),
}


def ratio_flags(result: Mapping[str, Any]) -> List[str]:
    """One sentence per SAE/raw ratio below 1 (per field, and per rare/common group), saying what it means."""
    flags = []
    for field, fres in result.get("fields", {}).items():
        summary = fres.get("summary", {})
        split = summary.get("by_frequency") or {}
        groups = [(field, summary)] + [(f"{field}, {g} values", split[g]) for g in ("rare", "common") if g in split]
        for name, group in groups:
            for key, (label, meaning) in RATIO_MEANINGS.items():
                value = group.get(key)
                if value is not None and value < 1:
                    inside = group.get("ratio_corr") if key == "ratio_held_out" else None
                    also = f" (in-sample ratio {inside:.2f})" if inside is not None else ""
                    flags.append(f"{name}: {label} {value:.2f} < 1{also}: {meaning}.")
    return flags


def fidelity_flags(fidelity: Optional[Mapping[str, Any]]) -> List[str]:
    """One sentence per split whose NDCG recovered is below ``RECOVERED_FLAG``."""
    flags = []
    for split, rec in ((fidelity or {}).get("recovered") or {}).items():
        value = (rec or {}).get("recovered")
        if value is not None and value < RECOVERED_FLAG:
            flags.append(
                f"{split}: NDCG recovered {value:.2f} < {RECOVERED_FLAG}: with the SAE's reconstruction in place of "
                "the hidden state the model ranks clearly worse than with the state itself, so the latents below "
                "describe only part of what the model uses."
            )
    return flags


FIDELITY_TEXT = (
    "FVU: the share of the hidden state's variance the SAE's reconstruction misses (0 is perfect). NDCG recovered "
    "= (spliced - ablated) / (as is - ablated): 1 means the model ranks as well with the reconstruction spliced "
    "in as with the state itself, 0 as badly as with the layer mean-ablated. The interpretation describes the "
    "SAE's latents, so it speaks for the model only as far as these numbers allow."
)


def _fidelity_markdown(fidelity: Optional[Mapping[str, Any]]) -> List[str]:
    if not fidelity:
        return []
    fid = fidelity.get("fidelity") or {}
    out = ["## SAE fidelity", ""]
    if fid:
        out += [_fidelity_sentence(fid), ""]
    recovered = fidelity.get("recovered") or {}
    if recovered:
        metric = next(iter(recovered.values())).get("metric", "ndcg@10")
        out.append(
            markdown_table(
                [
                    [
                        split,
                        r.get("original"),
                        r.get("spliced"),
                        r.get("spliced_error"),
                        r.get("ablated"),
                        r.get("recovered"),
                    ]
                    for split, r in recovered.items()
                ],
                ["split", f"{metric} as is", "spliced", "spliced + error", "mean-ablated", "NDCG recovered"],
            )
        )
    out += [FIDELITY_TEXT, ""]
    out += [f"- **Flag:** {flag}" for flag in fidelity_flags(fidelity)]
    return out + ([""] if fidelity_flags(fidelity) else [])


def _count(x: Any) -> str:
    return "n/a" if x is None else str(int(x)) if float(x).is_integer() else str(x)


def _fidelity_sentence(fid: Mapping[str, Any]) -> str:
    dead = fid.get("n_dead")
    return (
        f"On {_count(fid.get('n_rows'))} held-out states: FVU {fmt(fid.get('fvu'))} (explained variance "
        f"{fmt(fid.get('explained_variance'))}), MSE {fmt(fid.get('mse'), 6)}, L0 {fmt(fid.get('l0'), 1)} "
        f"active latents per state, dead latents {_count(dead)} "
        f"({fmt(fid.get('dead_frac'), 3)} of all)."
    )


def _summary_markdown(fields: Mapping[str, Any]) -> List[str]:
    """The monosemanticity tables: one row per field, then per rare / common group."""
    out = []
    summary_rows = []
    for field, fres in fields.items():
        s = fres["summary"]
        summary_rows.append(
            [
                field,
                s["n_values"],
                s["raw"]["mean_best_abs_corr"],
                s["sae"]["mean_best_abs_corr"],
                s["ratio_corr"],
                s["raw"]["mean_best_auc"],
                s["sae"]["mean_best_auc"],
                s["ratio_auc"],
                s.get("probe_mean_corr"),
                *_held_out_cells(s),
            ]
        )
    out.append("## Monosemanticity: raw dimensions vs SAE latents")
    out.append("")
    out.append(
        markdown_table(
            summary_rows,
            [
                "field",
                "values",
                "raw best |corr|",
                "SAE best |corr|",
                "ratio |corr|",
                "raw best AUC",
                "SAE best AUC",
                "ratio AUC",
                "all raw dims (probe) |corr|",
                *HELD_OUT_HEADERS,
            ],
        )
    )
    split_rows = []
    for field, fres in fields.items():
        split = fres["summary"].get("by_frequency")
        for group in ("rare", "common") if split else ():
            g = split[group]
            share = f"{'<' if group == 'rare' else '>='} {split['rare_rate']:.0%}"
            split_rows.append(
                [
                    field,
                    f"{group} ({share} of positions)",
                    g["n_values"],
                    g["raw_mean_best_abs_corr"],
                    g["sae_mean_best_abs_corr"],
                    g["ratio_corr"],
                    g.get("probe_mean_corr"),
                    *_held_out_cells(g),
                ]
            )
    if split_rows:
        out.append("")
        out.append("By how common the value is:")
        out.append("")
        out.append(
            markdown_table(
                split_rows,
                [
                    "field",
                    "values",
                    "n",
                    "raw best |corr|",
                    "SAE best |corr|",
                    "ratio |corr|",
                    "all raw dims (probe) |corr|",
                    *HELD_OUT_HEADERS,
                ],
            )
        )
    return out


GAIN_COLUMNS = (
    ("value", "value"),
    ("support", "support"),
    ("base_rate", "base rate"),
    ("raw_best_abs_corr", "raw |corr|"),
    ("raw_dim", "raw dim"),
    ("sae_best_abs_corr", "SAE |corr|"),
    ("sae_latent", "SAE latent"),
    ("raw_best_auc", "raw AUC"),
    ("sae_best_auc", "SAE AUC"),
    ("gain", "gain |corr|"),
)


def _gain_tables(fields: Mapping[str, Any]) -> List[str]:
    """Per field, the values with the largest SAE gain over the raw dimensions."""
    out: List[str] = []
    for field, fres in fields.items():
        rows = sorted(fres["summary"]["rows"], key=lambda r: (-r["gain"], r["value"]))[:N_GAIN_ROWS]
        out.append(f"## {field}: the {len(rows)} values with the largest SAE gain")
        out.append("")
        cells = [[r[key] for key, _ in GAIN_COLUMNS] for r in rows]
        out.append(markdown_table(cells, [title for _, title in GAIN_COLUMNS]))
    return out


def _example_latents_markdown(result: Mapping[str, Any]) -> List[str]:
    """The strongest latents with their labels, top items and logit-lens items."""
    examples = _example_latents(list(result.get("latents", [])), N_EXAMPLE_LATENTS)
    rows = [
        [
            lat["id"],
            lat["label"],
            lat["firing_rate"],
            "; ".join(lat.get("top_titles", [])[:N_MD_ITEMS]),
            "; ".join(lat.get("logit_titles", [])[:N_MD_ITEMS]),
        ]
        for lat in examples
    ]
    header = ["latent", "label", "firing rate", "top items", "logit lens"]
    return [f"## {len(examples)} example latents", "", markdown_table(rows, header)]


def _markdown(
    result: Mapping[str, Any], title: str, files: Mapping[str, str], fidelity: Optional[Mapping[str, Any]] = None
) -> str:
    out = [f"# {title}", ""]
    out += _fidelity_markdown(fidelity)
    out.append(
        f"{result.get('n_positions', 0)} positions; {result.get('n_latents', 0)} SAE latents "
        f"({result.get('n_alive', 0)} alive, {result.get('n_dead', 0)} dead) against "
        f"{result.get('n_raw_dims', 0)} raw hidden dimensions. Values count when at least "
        f"{result.get('min_support', 0)} positions hold them."
    )
    out.append("")
    out.append(
        "For each attribute value the best unit (SAE latent, or raw dimension as the baseline) is the "
        "one with the largest |Pearson correlation| (resp. ROC-AUC) between its activation and the "
        "value's indicator over all positions; the tables average these over values. "
        "Monosemanticity ratio = SAE / raw. The probe column is the correlation that a linear "
        "read-out of all raw dimensions together reaches on items it was not fitted on: a best unit "
        "far above it recognises particular items of the value rather than the value itself. "
        "The held-out columns choose each value's best unit on the items with an even id and score it "
        "on those with an odd id, and back: a maximum over many units gains from units that happen to "
        "fit, and a unit that fires on a few particular items scores near 0 on the others."
    )
    out.append("")
    fields = result.get("fields", {})
    out += _summary_markdown(fields)
    flags = ratio_flags(result)
    if flags:
        out += ["", *[f"- **Ratio below 1:** {flag}" for flag in flags], ""]
    if files.get("plot"):
        out.append(f"![best |corr| per value, raw vs SAE]({files['plot']})")
        out.append("")
    out += _gain_tables(fields)
    out += _example_latents_markdown(result)
    if files.get("html"):
        out.append(f"All alive latents: [{files['html']}]({files['html']}).")
        out.append("")
    return "\n".join(out)


def bar_axis_top(values: Iterable[Optional[float]], headroom: float = 1.25, step: float = 0.05) -> float:
    """The top of a |corr| bar chart's axis: the tallest bar plus room for the legend, rounded up to
    ``step``, within ``[step, 1]`` (the axis ran to 1 while every bar was below 0.3)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    top = max(finite, default=0.0) * headroom
    return min(1.0, max(step, math.ceil(round(top / step, 9)) * step))


def _figure(result: Mapping[str, Any], title: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fields = list(result.get("fields", {}).items())
    n = max(len(fields), 1)
    fig = Figure(figsize=(11, 3.6 * n), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for ax, (field, fres) in zip(axes, fields):
        rows = sorted(fres["summary"]["rows"], key=lambda r: (-r["support"], r["value"]))[:N_PLOT_VALUES]
        xs = range(len(rows))
        raw = [r["raw_best_abs_corr"] for r in rows]
        sae = [r["sae_best_abs_corr"] for r in rows]
        ax.bar([x - 0.2 for x in xs], raw, width=0.4, label="raw hidden dim", color="#9e9e9e")
        ax.bar([x + 0.2 for x in xs], sae, width=0.4, label="SAE latent", color="#1f77b4")
        ax.set_xticks(list(xs))
        ax.set_xticklabels([str(r["value"]) for r in rows], rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("best |corr|")
        ratio = fres["summary"].get("ratio_corr")
        ax.set_title(f"{field} (top {len(rows)} values by support; ratio SAE/raw {fmt(ratio, 2)})")
        ax.set_ylim(0, bar_axis_top(raw + sae))
        ax.set_xlim(-0.6, max(len(rows), 10) - 0.4)  # a few values keep narrow bars
        ax.legend(loc="upper right", fontsize=8)
        if not rows:
            ax.text(0.5, 0.5, "no value with enough support", ha="center", va="center", transform=ax.transAxes)
    if not fields:
        axes[0].text(0.5, 0.5, "no attribute fields", ha="center", va="center", transform=axes[0].transAxes)
    fig.suptitle(title)
    return fig


def _plot(result: Mapping[str, Any], path: Path, title: str) -> Path:
    _figure(result, title).savefig(path, dpi=110)
    return path


_HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; }
input#filter { width: 40em; max-width: 90%; padding: .4em; font-size: 1em; margin-bottom: 1em; }
table { border-collapse: collapse; width: 100%; font-size: .85em; }
th, td { border: 1px solid #ddd; padding: .3em .5em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; position: sticky; top: 0; }
tr:nth-child(even) { background: #fafafa; }
td.num { text-align: right; white-space: nowrap; }
ol { margin: 0; padding-left: 1.4em; }
.muted { color: #777; }
li.flag { color: #a15c00; font-weight: 600; }
h2 { font-size: 1.15em; }
"""

_HTML_SCRIPT = """
(function () {
  var box = document.getElementById('filter');
  var rows = document.querySelectorAll('#latents tbody tr');
  var count = document.getElementById('count');
  box.addEventListener('input', function () {
    var q = box.value.toLowerCase();
    var shown = 0;
    for (var i = 0; i < rows.length; i++) {
      var hit = rows[i].textContent.toLowerCase().indexOf(q) !== -1;
      rows[i].style.display = hit ? '' : 'none';
      if (hit) { shown++; }
    }
    count.textContent = shown;
  });
})();
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _html_list(items: Sequence[Any]) -> str:
    if not items:
        return '<span class="muted">none</span>'
    return "<ol>" + "".join(f"<li>{_e(x)}</li>" for x in items) + "</ol>"


def _fidelity_html(fidelity: Optional[Mapping[str, Any]]) -> str:
    """The fidelity numbers, their meaning and their flags as an HTML section ('' without fidelity)."""
    if not fidelity:
        return ""
    fid = fidelity.get("fidelity") or {}
    items = [f"<li>{_e(_fidelity_sentence(fid))}</li>"] if fid else []
    for split, r in (fidelity.get("recovered") or {}).items():
        items.append(
            f"<li>{_e(split)}: {_e(r.get('metric', 'ndcg@10'))} as is {_e(fmt(r.get('original')))}, spliced "
            f"{_e(fmt(r.get('spliced')))}, mean-ablated {_e(fmt(r.get('ablated')))}: NDCG recovered "
            f"{_e(fmt(r.get('recovered'), 3))}</li>"
        )
    items += [f'<li class="flag">Flag: {_e(flag)}</li>' for flag in fidelity_flags(fidelity)]
    return f'<h2>SAE fidelity</h2>\n<ul>{"".join(items)}</ul>\n<p class="muted">{_e(FIDELITY_TEXT)}</p>\n'


def _html(result: Mapping[str, Any], title: str, fidelity: Optional[Mapping[str, Any]] = None) -> str:
    latents = list(result.get("latents", []))
    rows = []
    for lat in latents:
        best = [
            f"{bv.get('field', '')}={bv.get('value', '')} (corr {fmt(bv.get('corr'), 2)}, "
            f"AUC {fmt(bv.get('auc'), 2)}, prec {fmt(bv.get('precision'), 2)})"
            for bv in lat.get("best_values", [])
        ]
        rows.append(
            "<tr>"
            f'<td class="num">{_e(lat["id"])}</td>'
            f"<td>{_e(lat.get('label', ''))}</td>"
            f'<td class="num">{_e(fmt(lat.get("firing_rate")))}</td>'
            f"<td>{_html_list(lat.get('top_titles', []))}</td>"
            f"<td>{_html_list(lat.get('logit_titles', []))}</td>"
            f"<td>{_html_list(best)}</td>"
            "</tr>"
        )
    summary = []
    for field, fres in result.get("fields", {}).items():
        s = fres["summary"]
        summary.append(
            f"<li>{_e(field)}: best |corr| raw {_e(fmt(s['raw']['mean_best_abs_corr']))} vs SAE "
            f"{_e(fmt(s['sae']['mean_best_abs_corr']))} (ratio {_e(fmt(s['ratio_corr'], 2))}, held-out ratio "
            f"{_e(fmt(s.get('ratio_held_out'), 2))}); "
            f"best AUC raw {_e(fmt(s['raw']['mean_best_auc']))} vs SAE {_e(fmt(s['sae']['mean_best_auc']))}"
            f" over {_e(s['n_values'])} values</li>"
        )
    flags = "".join(f'<li class="flag">Ratio below 1: {_e(flag)}</li>' for flag in ratio_flags(result))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{_HTML_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{_e(title)}</h1>\n" + _fidelity_html(fidelity) + "<h2>Interpretation</h2>\n"
        f"<p>{_e(result.get('n_alive', len(latents)))} alive latents of {_e(result.get('n_latents', ''))} "
        f"over {_e(result.get('n_positions', ''))} positions.</p>\n"
        f"<ul>{''.join(summary)}{flags}</ul>\n"
        '<input id="filter" type="search" placeholder="Filter latents by any text (label, item, value)" '
        "autofocus>\n"
        f'<p><span id="count">{len(latents)}</span> shown</p>\n'
        '<table id="latents">\n<thead><tr><th>latent</th><th>label</th><th>firing rate</th>'
        "<th>top-activating items</th><th>logit lens</th><th>best values</th></tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody>\n</table>\n"
        f"<script>{_HTML_SCRIPT}</script>\n</body>\n</html>\n"
    )


def write_interpretation_report(
    result: Mapping[str, Any],
    out_dir: PathLike,
    title: str = "SAE interpretation",
    fidelity: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Path]:
    """Write the interpretation ``result`` (from ``interpret``) into ``out_dir``.

    Files: ``interpretation.json`` (the result as is), ``interpretation.md``
    (the SAE's fidelity, summary per field with every ratio below 1 flagged and
    explained, the values with the largest SAE gain, example latents),
    ``interpretation.png`` (best |corr| per value, raw vs SAE, one panel per
    field, the axis fitted to the bars) and ``latents.html`` (the fidelity, the
    summary and a self-contained page to browse and filter all alive latents).
    ``fidelity``: ``{"fidelity": evaluate_sae's metrics, "recovered": {split:
    ndcg_recovered(...)}}`` as SASRecSAE measures them (left out when None).
    Returns ``{"json", "markdown", "plot", "html"}`` -> path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "interpretation.json",
        "markdown": out / "interpretation.md",
        "plot": out / "interpretation.png",
        "html": out / "latents.html",
    }
    write_json(result, paths["json"])
    _plot(result, paths["plot"], title)
    write_text_atomic(_html(result, title, fidelity), paths["html"])
    names = {"plot": paths["plot"].name, "html": paths["html"].name}
    write_text_atomic(_markdown(result, title, names, fidelity), paths["markdown"])
    return paths
