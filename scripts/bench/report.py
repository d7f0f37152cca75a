"""Prints the benchmark table and draws the chart from target/bench/results.json.

  python scripts/bench/report.py target/bench/results.json [--markdown]
The chart goes beside the results (chart.png).
"""

import json
import sys
from pathlib import Path

TOOLS = ("dropship", "dropship-docker", "naive", "ansible")
LABELS = {"dropship": "dropship", "dropship-docker": "dropship --source docker (previous flow)",
          "naive": "naive ssh loop", "ansible": "Kubespray (Ansible)"}
SHORT = {"dropship": "ds", "dropship-docker": "ds-docker", "naive": "naive", "ansible": "Ansible"}


def rows(results):
    for g in results["groups"]:
        link = f"{g['link_mbit']} Mbit/s" if g["link_mbit"] else "unshaped"
        for case, row in g["summary"].items():
            yield g, link, case, row


def fmt(x, spec):
    return "" if x is None else format(x, spec)


def table(results, markdown):
    present = [t for t in TOOLS if any(t in row for _g, _l, _c, row in rows(results))]
    others = [t for t in present if t != "dropship"]
    head = ["nodes", "runtime", "set", "link", "case", *(f"{SHORT[t]} s" for t in present),
            *(f"{SHORT[t]}÷ds" for t in others),
            "MB→bastion " + "/".join(SHORT[t] for t in present), "limit s", "ds÷limit", "ds RSS MB"]
    lines = []
    for g, link, case, row in rows(results):
        t = {tool: row.get(tool) for tool in present}
        wall = [fmt(t[x] and t[x]["wall_s"], ".2f") + (f" ({t[x]['n']})" if t[x] and t[x]["n"] != 3 else "")
                for x in present]
        ratio = [fmt(t[x] and t[x].get("times_dropship"), ".1f") for x in others]
        mb = "/".join(fmt(t[x] and t[x]["tx_bytes"] / 1e6, ".0f") or "-" for x in present)
        rss = fmt(t["dropship"] and t["dropship"]["peak_rss_kb"] / 1024, ".0f")
        lines.append([str(g["nodes"]), g.get("runtime", "docker"), g["set"], link, case, *wall, *ratio, mb,
                      fmt(row.get("link_limit_s"), ".1f"), fmt(row.get("dropship_to_limit"), ".2f"), rss])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
    else:
        widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
        out = ["  ".join(x.rjust(w) for x, w in zip(line, widths)) for line in [head, *lines]]
    return "\n".join(out)


def chart(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    links = sorted({g["link_mbit"] or 0 for g in results["groups"]})
    fig, axes = plt.subplots(len(links), 1, figsize=(10, 3.2 * len(links)), dpi=80, squeeze=False)
    present = [t for t in TOOLS if any(t in row for _g, _l, _c, row in rows(results))]
    width = 0.8 / len(present)
    colors = {"dropship": "#1b7837", "dropship-docker": "#7fbf7b", "naive": "#999999",
              "ansible": "#c2452d"}
    for ax, link in zip(axes[:, 0], links):
        groups = [x for x in rows(results) if (x[0]["link_mbit"] or 0) == link]
        for i, tool in enumerate(present):
            bars = [(j + (i - (len(present) - 1) / 2) * width, row[tool]["wall_s"])
                    for j, (_g, _l, _c, row) in enumerate(groups) if tool in row]
            if bars:
                ax.bar(*zip(*bars), width, label=LABELS[tool], color=colors[tool])
        limits = [(j - 0.4, row["link_limit_s"])
                  for j, (_g, _l, _c, row) in enumerate(groups) if row.get("link_limit_s")]
        if limits:
            ax.scatter(*zip(*limits), marker="_", s=150, linewidths=2, color="black", zorder=3,
                       label="link limit")
        ax.set_yscale("log")
        bottom, top = ax.get_ylim()
        ax.set_ylim(bottom, top * 4)  # room for the legend
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.set_ylabel("seconds (log)")
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([f"{c}\n{g['set']} {g['nodes']}n\n{g.get('runtime', 'docker')}" for g, _l, c, _r in groups], fontsize=7)
        ax.set_title(f"median wall time, bastion link {f'shaped to {link} Mbit/s' if link else 'unshaped'}",
                     fontsize=9)
        ax.grid(axis="y", alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="upper left", ncols=4)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main():
    path = Path(sys.argv[1])
    results = json.loads(path.read_text())
    markdown = "--markdown" in sys.argv
    print(table(results, markdown))
    if not markdown:
        chart(results, path.with_name("chart.png"))
        print(f"\nresults: {path}\nchart:   {path.with_name('chart.png')}", file=sys.stderr)


if __name__ == "__main__":
    main()
