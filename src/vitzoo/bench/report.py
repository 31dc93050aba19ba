"""How ``vitzoo bench`` shows its rows (:mod:`vitzoo.bench.measure` measures them): a markdown table, the ratio with
the range of its rounds, and a bar chart."""
from __future__ import annotations


def ratio_cell(row: dict) -> str:
    """'1.59x (1.52-1.66)': the median of the rounds' paired ratios and their range (its trust, on a shared host)."""
    ratios = [o / r for o, r in zip(row["ours_rounds"], row["ref_rounds"])]
    spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
    return f"{row['ratio']:.2f}x{spread}"


def format_table(rows: list[dict]) -> str:
    """A markdown table, one row per model and setting."""
    head = ["name", "mode", "batch", "size", "params (M)", "GFLOPs/img", "ours", "ours img/s", "ms/step",
            "% peak"]
    if any("reference" in r for r in rows):
        head += ["reference", "ref img/s", "ratio (rounds' range)", "max\\|diff\\| fp32"]
    if any(r["ours_peak_mib"] is not None for r in rows):
        head += ["peak MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [r["name"], r["mode"], str(r["batch"]), str(r["img_size"]), f"{r['params_m']:.1f}",
                 f"{r['gflops']:.2f}", r["ours_precision"], f"{r['ours_img_s']:.1f}",
                 f"{r['ours_ms_step']:.0f}", f"{100 * r['peak_fraction']:.0f}%" if r["peak_fraction"] else "-"]
        if "reference" in head:
            cells += [f"{r['reference']} {r['ref_precision']}", f"{r['ref_img_s']:.1f}",
                      ratio_cell(r), f"{r['max_abs_diff_fp32']:.1e}"] if "reference" in r else ["-"] * 4
        if "peak MiB" in head:
            cells += [f"{r['ours_peak_mib']:.0f}" if r["ours_peak_mib"] is not None else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_rows(rows: list[dict], path: str) -> None:
    """A bar chart of img/s per row, ours beside the reference, the ratio above each pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['name']}\nb{r['batch']} {r['img_size']}px" for r in rows]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(rows)), 3.6))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["ours_img_s"] for r in rows], 0.4, label="vitzoo")
    ax.bar([x + 0.2 for x in xs], [r.get("ref_img_s", 0.0) for r in rows], 0.4, label="reference")
    for x, r in zip(xs, rows):
        if "ratio" in r:
            ax.text(x, max(r["ours_img_s"], r["ref_img_s"]), f"{r['ratio']:.2f}x", ha="center", va="bottom")
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel(f"img/s ({rows[0]['mode']})")
    ax.set_ylim(0, 1.25 * max(max(r["ours_img_s"], r.get("ref_img_s", 0.0)) for r in rows))  # room for labels
    ax.legend(loc="upper left", ncols=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
