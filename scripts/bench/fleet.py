"""The fleet case of the dropship benchmark: one push to 8, 32 and 100 containerd nodes through
one bastion, cold then warm, and at 100 nodes the same push at other --forks. Per run: wall time,
peak RSS, the most TCP connections the bastion's sshd held at once, and the bytes that crossed
the root -> bastion link both ways. Writes target/bench/fleet.json and target/bench/fleet.png.

Run through `scripts/bench.sh fleet` (it prepares the venv and the release binary).
`scripts/bench.sh fleet-scenario` is the mixed fleet instead (see `scenario`): a scripted check
that fails (exit 1) when the report is not what the fleet holds.
Selection by environment:
  BENCH_FLEET_NODES="8 32 100"   BENCH_FLEET_FORKS=50   (the -f of every size)
  BENCH_FLEET_MORE_FORKS="10 100"   (extra cold + warm pushes on the largest size; "" for none)
  BENCH_FLEET_SET=small   BENCH_OUT=target/bench

Each size is a fresh test bed: containerd-only nodes (TESTBED_RUNTIMES=containerd), none
Flatcar, none aarch64, so every node is a target. Cold: every node without the images and
dropship's cache empty (so it downloads from the registry while the nodes connect); warm: the
same push again, everything present.
"""

import json
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import IMAGES, OUT, TESTBED, log, run, words

LAYOUT = {"TESTBED_RUNTIMES": "containerd", "TESTBED_AARCH64_NODES": "", "TESTBED_FLATCAR_NODES": ""}


class Fleet:
    """A containerd-only test bed of N nodes, brought up afresh."""

    def __init__(self, nodes, flatcar=""):
        self.nodes = nodes
        self.environ = {**os.environ, **LAYOUT, "TESTBED_FLATCAR_NODES": flatcar}
        with open(OUT / "fleet.log", "a") as log_file:  # the test bed's progress lines
            subprocess.run([str(TESTBED), "down"], env=self.environ, stdout=log_file,
                           stderr=log_file)
            start = time.monotonic()
            run([str(TESTBED), "up", str(nodes)], env=self.environ, stdout=log_file,
                stderr=log_file)
        self.up_s = round(time.monotonic() - start, 1)
        out = run([str(TESTBED), "env"], env=self.environ, capture_output=True).stdout
        self.env = {k: v.strip("'") for k, v in (line.split("=", 1) for line in out.splitlines())}
        status = run([str(TESTBED), "status"], env=self.environ, capture_output=True).stdout
        self.node_memory = next(line.split(": ", 1)[1] for line in status.splitlines()
                                if "memory of the nodes" in line)

    def clean(self):
        """No image, no content left in any node's containerd (what cold means)."""
        wipe = ("ctr -n k8s.io images ls -q | xargs -r ctr -n k8s.io images rm --sync >/dev/null;"
                " ctr -n k8s.io leases ls -q | xargs -r ctr -n k8s.io leases rm --sync;"
                " ctr -n k8s.io content ls -q | xargs -r ctr -n k8s.io content rm >/dev/null")
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda n: run([str(TESTBED), "exec", n, "sh", "-c", wipe],
                                        env=self.environ, capture_output=True),
                          self.env["TESTBED_NODES"].split()))

    def link_bytes(self):
        stats = Path("/sys/class/net") / f"ds{self.env['TESTBED_ID']}-root" / "statistics"
        return sum(int((stats / f).read_text()) for f in ("tx_bytes", "rx_bytes"))

    def bastion_connections(self):
        """TCP connections established to the bastion's sshd right now."""
        out = subprocess.run(["ip", "netns", "exec", f"ds{self.env['TESTBED_ID']}-bastion", "ss",
                              "-Htn", "state", "established", "( sport = :22 )"],
                             capture_output=True, text=True).stdout
        return len(out.splitlines())


class Sampler(threading.Thread):
    """The most connections the bastion held at once while a push ran (every 100 ms)."""

    def __init__(self, fleet):
        super().__init__(daemon=True)
        self.fleet, self.peak, self.stopped = fleet, 0, threading.Event()

    def run(self):
        while not self.stopped.wait(0.1):
            self.peak = max(self.peak, self.fleet.bastion_connections())


def push(fleet, images_file, cache, forks, logfile, extra=(), check=True):
    rss_file = OUT / "tmp" / "fleet-rss"
    cmd = ["/usr/bin/time", "-f", "%M %U %S", "-o", str(rss_file), os.environ["DROPSHIP_BIN"], "push",
           "-i", fleet.env["TESTBED_INVENTORY"], "--images-file", str(images_file),
           "--cache-dir", str(cache), "--delegate", "localhost", "-f", str(forks),
           "--json", str(OUT / "tmp" / "fleet-report.json"), *extra]
    sampler = Sampler(fleet)
    before = fleet.link_bytes()
    sampler.start()
    start = time.monotonic()
    with open(logfile, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        status = subprocess.run(cmd, env={**os.environ, **fleet.env}, stdout=out,
                                stderr=subprocess.STDOUT)
    wall = time.monotonic() - start
    sampler.stopped.set()
    sampler.join()
    if check and status.returncode != 0:
        raise RuntimeError(f"dropship failed (exit {status.returncode}): see {logfile}")
    hosts = json.loads((OUT / "tmp" / "fleet-report.json").read_text())["hosts"]
    rss, user, system = rss_file.read_text().splitlines()[-1].split()
    return {"exit": status.returncode, "hosts": hosts, "wall_s": round(wall, 2),
            "peak_rss_kb": int(rss), "cpu_s": round(float(user) + float(system), 2),
            "bastion_connections": sampler.peak, "bastion_bytes": fleet.link_bytes() - before,
            "sent_bytes": sum(h["bytes_sent"] for h in hosts),
            "statuses": sorted({h["status"] for h in hosts})}


def main():
    (OUT / "tmp").mkdir(parents=True, exist_ok=True)
    image_set = os.environ.get("BENCH_FLEET_SET", "small")
    forks = int(os.environ.get("BENCH_FLEET_FORKS", "50"))
    sizes = [int(n) for n in words("BENCH_FLEET_NODES", "8 32 100")]
    more_forks = [int(f) for f in words("BENCH_FLEET_MORE_FORKS", "10 100")]
    images_file = OUT / "tmp" / "fleet-images.txt"
    images_file.write_text(run([str(IMAGES), "list", image_set], capture_output=True).stdout)
    cache = OUT / "cache" / "fleet"
    logfile = OUT / "fleet.log"
    results = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "set": image_set, "images": images_file.read_text().split(), "sizes": []}
    for nodes in sizes:
        log(f"fleet: test bed with {nodes} containerd nodes")
        fleet = Fleet(nodes)
        size = {"nodes": nodes, "up_s": fleet.up_s, "node_memory": fleet.node_memory, "runs": []}
        results["sizes"].append(size)
        for f in [forks] + (more_forks if nodes == max(sizes) else []):
            fleet.clean()
            subprocess.run(["rm", "-rf", str(cache)], check=True)
            for case in ("cold", "warm"):
                record = {"case": case, "forks": f, **push(fleet, images_file, cache, f, logfile)}
                del record["hosts"], record["exit"]
                size["runs"].append(record)
                log(f"  {nodes:4} nodes -f {f:<3} {case:4} {record['wall_s']:7.2f} s  "
                    f"rss {record['peak_rss_kb'] / 1024:5.1f} MB  bastion conns "
                    f"{record['bastion_connections']}  {record['bastion_bytes'] / 1e6:7.1f} MB "
                    f"through the bastion  {record['statuses']}")
        (OUT / "fleet.json").write_text(json.dumps(results, indent=2) + "\n")
    subprocess.run([str(TESTBED), "down"], env={**os.environ, **LAYOUT}, stdout=subprocess.DEVNULL)
    report = Path(__file__).with_name("fleet_report.py")
    run([str(OUT / "venv" / "bin" / "python"), str(report), str(OUT / "fleet.json")])


def scenario():
    """A push to 100 nodes of which 5 are down (sshd stopped), 3 are Flatcar and 10 already hold
    the images: the report must say exactly that, 82 loaded, and the run must not wait on the
    down nodes longer than their retries. Sizes from BENCH_SCENARIO ("100 5 3 10")."""
    (OUT / "tmp").mkdir(parents=True, exist_ok=True)
    total, down, flatcar, holding = map(int, words("BENCH_SCENARIO", "100 5 3 10"))
    names = [f"node{i}" for i in range(1, total + 1)]
    flatcar_nodes, rest = names[total - flatcar:], names[:total - flatcar]
    holding_nodes, down_nodes = rest[:holding], rest[-down:]
    images_file = OUT / "tmp" / "fleet-images.txt"
    images_file.write_text(run([str(IMAGES), "list", "small"], capture_output=True).stdout)
    cache, logfile = OUT / "cache" / "fleet", OUT / "fleet.log"
    fleet = Fleet(total, " ".join(flatcar_nodes))
    fleet.clean()
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    log(f"scenario: {holding} nodes given the images first")
    push(fleet, images_file, cache, 50, logfile, ["-l", ",".join(holding_nodes)])
    for node in down_nodes:
        run([str(TESTBED), "stop", node, "sshd"], env=fleet.environ, stdout=subprocess.DEVNULL)
    try:
        # Kubespray's large-deployment advice: forks 50; retries as the test suite has them.
        record = push(fleet, images_file, cache, 50, logfile,
                      ["--retries", "2", "--retry-stagger", "1"], check=False)
    finally:
        for node in down_nodes:
            run([str(TESTBED), "start", node, "sshd"], env=fleet.environ, stdout=subprocess.DEVNULL)
    status = {h["host"]: h["status"] for h in record["hosts"]}
    expected = {**{n: "loaded" for n in rest}, **{n: "up_to_date" for n in holding_nodes},
                **{n: "failed" for n in down_nodes}, **{n: "skipped_coreos" for n in flatcar_nodes}}
    wrong = {n: (status.get(n), want) for n, want in expected.items() if status.get(n) != want}
    counts = {s: sum(1 for v in status.values() if v == s) for s in sorted(set(status.values()))}
    slowest = max(h["elapsed"] for h in record["hosts"] if h["host"] in down_nodes)
    summary = {"nodes": total, "down": down_nodes, "flatcar": flatcar_nodes,
               "holding": holding_nodes, "exit": record["exit"], "counts": counts,
               "wall_s": record["wall_s"], "down_node_elapsed_s": slowest,
               "peak_rss_kb": record["peak_rss_kb"],
               "bastion_connections": record["bastion_connections"], "wrong": wrong}
    (OUT / "fleet-scenario.json").write_text(json.dumps(summary, indent=2) + "\n")
    subprocess.run([str(TESTBED), "down"], env=fleet.environ, stdout=subprocess.DEVNULL)
    log(f"scenario: exit {record['exit']}, {counts}, {record['wall_s']} s "
        f"(a down node gave up after {slowest:.1f} s), rss {record['peak_rss_kb'] / 1024:.0f} MB, "
        f"{record['bastion_connections']} bastion connections")
    if wrong or record["exit"] != 1:
        log(f"scenario: WRONG: {wrong or 'exit code ' + str(record['exit'])}")
        raise SystemExit(1)


if __name__ == "__main__":
    scenario() if os.environ.get("BENCH_FLEET_MODE") == "scenario" else main()
