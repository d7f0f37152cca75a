"""Prints the fleet table and draws the fleet chart from target/bench/fleet.json.

  python scripts/bench/fleet_report.py target/bench/fleet.json [--markdown]
The chart goes beside the results (fleet.png).
"""

import json
import sys
from pathlib import Path


def table(results, markdown):
    head = ["nodes", "-f", "case", "wall s", "dropship CPU s", "peak RSS MB", "bastion conns", "MB through bastion",
            "MB sent", "test bed up s"]
    lines = []
    for size in results["sizes"]:
        for r in size["runs"]:
            lines.append([str(size["nodes"]), str(r["forks"]), r["case"], f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}",
                          f"{r['peak_rss_kb'] / 1024:.0f}", str(r["bastion_connections"]),
                          f"{r['bastion_bytes'] / 1e6:.1f}", f"{r['sent_bytes'] / 1e6:.1f}",
                          f"{size['up_s']:.0f}"])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
    else:
        widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
        out = ["  ".join(x.rjust(w) for x, w in zip(line, widths)) for line in [head, *lines]]
    return "\n".join(out)


def line(points):
    """Least-squares a + b·x through (x, y) points."""
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return my - b * mx, b


def model(results):
    """Per-node costs fitted to the runs at the common -f (time, CPU, bastion bytes against the
    number of nodes), memory against the transfers in flight (min(nodes, -f)), and what they
    predict for 1,000 nodes."""
    forks = results["sizes"][0]["runs"][0]["forks"]
    runs = [(s["nodes"], r) for s in results["sizes"] for r in s["runs"]]
    fits = {}
    for case in ("cold", "warm"):
        mine = [(n, r) for n, r in runs if r["case"] == case and r["forks"] == forks]
        for key, scale in (("wall_s", 1), ("cpu_s", 1), ("bastion_bytes", 1e6)):
            fits[(case, key)] = line([(n, r[key] / scale) for n, r in mine])
        fits[(case, "peak_rss_kb")] = line([(min(n, r["forks"]), r["peak_rss_kb"] / 1024)
                                           for n, r in runs if r["case"] == case])
    out = [f"model (least squares; -f {forks}; memory against transfers in flight):"]
    units = {"wall_s": ("s", "wall"), "cpu_s": ("s", "dropship CPU"),
             "bastion_bytes": ("MB", "through the bastion"), "peak_rss_kb": ("MB", "peak RSS")}
    for (case, key), (a, b) in fits.items():
        unit, what = units[key]
        per = "per transfer in flight" if key == "peak_rss_kb" else "per node"
        at = min(1000, forks) if key == "peak_rss_kb" else 1000
        out.append(f"  {case:4} {what:20} {a:8.2f} {unit} + {b:7.3f} {unit} {per:22} "
                   f"-> 1,000 nodes: {a + b * at:9.1f} {unit}")
    return "\n".join(out)


def chart(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    forks = results["sizes"][0]["runs"][0]["forks"]
    panels = [("wall_s", "wall time, s", 1), ("peak_rss_kb", "peak RSS, MB", 1024),
              ("bastion_bytes", "through the bastion, MB", 1e6)]
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 3.4), dpi=80)
    for ax, (key, title, scale) in zip(axes, panels):
        for case, color in (("cold", "#1b7837"), ("warm", "#7fbf7b")):
            points = [(s["nodes"], r[key] / scale) for s in results["sizes"] for r in s["runs"]
                      if r["case"] == case and r["forks"] == forks]
            ax.plot(*zip(*points), marker="o", color=color, label=f"{case}, -f {forks}")
            others = [(s["nodes"], r[key] / scale, r["forks"]) for s in results["sizes"]
                      for r in s["runs"] if r["case"] == case and r["forks"] != forks]
            for x, y, f in others:
                ax.scatter([x], [y], marker="x", color=color)
                ax.annotate(f"-f {f}", (x, y), fontsize=7, xytext=(4, 2), textcoords="offset points")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("nodes")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"dropship push, {results['set']} set, containerd nodes, one bastion", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main():
    path = Path(sys.argv[1])
    results = json.loads(path.read_text())
    markdown = "--markdown" in sys.argv
    print(table(results, markdown))
    print()
    print(model(results))
    if not markdown:
        chart(results, path.with_name("fleet.png"))
        print(f"\nresults: {path}\nchart:   {path.with_name('fleet.png')}", file=sys.stderr)


if __name__ == "__main__":
    main()
