"""The dropship benchmark: dropship push, Kubespray's download flow (Ansible) and a naive ssh loop,
on the test bed, cold / warm / version bump, unshaped and with the root->bastion link shaped.

Run through scripts/bench.sh (it prepares the venv, the release binary and the test images).
Selection by environment (defaults give the full matrix):
  BENCH_TOOLS="dropship naive ansible"   BENCH_SETS="small large"   BENCH_NODES="4 8"
  BENCH_RUNTIMES="docker containerd"   (the nodes' runtime: every node runs it; the last node is
                  Flatcar and receives nothing)
  BENCH_LINKS="off 200"   (off = unshaped; a number = tbf rate in Mbit/s on the root-side veth)
  BENCH_REPS="dropship=3 naive=1 ansible=1"   (repetitions per tool; the table shows the median;
                  one chain of the slow tools keeps the full matrix near 40 minutes)
  BENCH_OUT=target/bench
  BENCH_MERGE=1   add these runs to the groups of an existing results.json (e.g. dropship's runs
                  to a peer-only run made earlier) instead of starting afresh

Each repetition of a tool is a chain from a clean state (test images removed from every node
daemon and from the control daemon, the tool's own cache emptied):
  cold  push the set;  warm  push it again (all present);  bump  push the set with its first
  image at v2 (one 5 MB / 512 KB layer changed) -- so warm and bump start from the tool's own
  previous run, caches included.
Repetitions interleave the tools, so every ratio compares runs made under the same load.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTBED = REPO / "scripts" / "testbed.sh"
IMAGES = REPO / "scripts" / "testbed-images.sh"
BENCH_DIR = REPO / "scripts" / "bench"
OUT = Path(os.environ.get("BENCH_OUT", REPO / "target" / "bench")).resolve()
VENV_BIN = OUT / "venv" / "bin"
CASES = ("cold", "warm", "bump")
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, **kw)


def words(name, default):
    return os.environ.get(name, default).split()


# --- the test bed -----------------------------------------------------------------------------


class Testbed:
    def __init__(self):
        self.env = {}

    def up(self, nodes, runtime):
        """A fleet of `nodes` nodes all running `runtime`, none pretending another architecture
        (the peer has no per-node platform)."""
        layout = {"TESTBED_RUNTIMES": runtime, "TESTBED_AARCH64_NODES": ""}
        env = {**os.environ, **layout}
        running = self.layout()
        if self.node_count() != nodes or running.get("TESTBED_NODE1_RUNTIME") != runtime \
                or running.get("TESTBED_AARCH64_NODES"):
            run([str(TESTBED), "down"], stdout=subprocess.DEVNULL)
        run([str(TESTBED), "up", str(nodes)], stdout=subprocess.DEVNULL, env=env)
        self.env = self.layout()

    @staticmethod
    def layout():
        out = subprocess.run([str(TESTBED), "env"], capture_output=True, text=True).stdout
        pairs = (line.split("=", 1) for line in out.splitlines() if "=" in line)
        return {k: v.strip("'") for k, v in pairs}

    def node_count(self):
        status = subprocess.run([str(TESTBED), "status"], capture_output=True, text=True)
        first = status.stdout.split("\n", 1)[0].split()
        return int(first[2]) if status.returncode == 0 and len(first) > 2 else None

    def runtime(self, node):
        return self.env[f"TESTBED_{node.upper()}_RUNTIME"]

    @property
    def nodes(self):
        return self.env["TESTBED_NODES"].split()

    @property
    def targets(self):
        """Nodes that receive images: all but the Flatcar one."""
        return [n for n in self.nodes if n != self.env["TESTBED_FLATCAR_NODE"]]

    @property
    def root_link(self):
        return f"ds{self.env['TESTBED_ID']}-root"

    def docker(self, host, *args, **kw):
        return run(["/usr/bin/docker", "-H", host, *args], capture_output=True, **kw).stdout

    # What empties a node's runtime, by runtime (run inside the node, no SSH): images removed and
    # their content collected, so the next cold run starts from nothing.
    EMPTY = {
        "docker": "ids=$(docker images -aq); [ -z \"$ids\" ] || docker rmi -f $ids >/dev/null;"
                  " docker image prune -f >/dev/null",
        "containerd": "ctr -n k8s.io images ls -q | xargs -r ctr -n k8s.io images rm --sync >/dev/null",
        "crio": "podman rmi -a -f >/dev/null",
    }

    def clean(self):
        """Every runtime (nodes and the control daemon) without images; no file left in any
        node's releases."""
        control = self.env["TESTBED_CONTROL_DOCKER_HOST"]
        ids = self.docker(control, "images", "-aq").split()
        if ids:
            self.docker(control, "rmi", "-f", *sorted(set(ids)))
        self.docker(control, "image", "prune", "-f")
        for node in self.nodes:
            run([str(TESTBED), "exec", node, "sh", "-c", self.EMPTY[self.runtime(node)]])
            shutil.rmtree(Path(self.env["TESTBED_STATE"]) / node / "tmp" / "releases" / "images", True)

    def link_bytes(self):
        stats = Path("/sys/class/net") / self.root_link / "statistics"
        return tuple(int((stats / f).read_text()) for f in ("tx_bytes", "rx_bytes"))

    def shape(self, mbit):
        """tbf on the root-side veth: limits root -> bastion (the push direction). The registry
        lives in the bastion, so pulls (bastion -> root, egress of the bastion's eth0) stay free."""
        subprocess.run(["tc", "qdisc", "del", "dev", self.root_link, "root"], capture_output=True)
        if mbit:
            run(["tc", "qdisc", "add", "dev", self.root_link, "root", "tbf", "rate", f"{mbit}mbit",
                 "burst", "256kb", "latency", "50ms"])

    def has(self, ref):
        try:
            self.blobs(ref)
            return True
        except urllib.error.HTTPError:
            return False

    def blobs(self, ref):
        """{digest: size} of an image's layers and config, from the registry's manifest."""
        name, tag = ref.split("/", 1)[1].rsplit(":", 1)
        req = urllib.request.Request(f"{self.env['TESTBED_REGISTRY_URL']}/v2/{name}/manifests/{tag}",
                                     headers={"Accept": MANIFEST_V2})
        with urllib.request.urlopen(req, timeout=10) as resp:
            manifest = json.load(resp)
        return {b["digest"]: b["size"] for b in [manifest["config"], *manifest["layers"]]}


def image_lists(image_set):
    lists = {}
    for case, args in (("v1", ["list", image_set]), ("v2", ["list", "bump", image_set])):
        lists[case] = run([str(IMAGES), *args], capture_output=True).stdout.split()
    bumped = lists["v2"][0]
    return {"cold": lists["v1"], "warm": lists["v1"], "bump": [bumped, *lists["v1"][1:]]}


def ensure_images(testbed, image_set, lists):
    """The registry keeps images across `down`: build the set and its bump only when missing."""
    env = {**os.environ, **testbed.env}
    if not all(testbed.has(ref) for ref in lists["cold"]):
        run([str(IMAGES), image_set], env=env, stdout=subprocess.DEVNULL)
    if not testbed.has(lists["bump"][0]):
        run([str(IMAGES), "bump", image_set], env=env, stdout=subprocess.DEVNULL)


def must_cross(testbed, lists):
    """Bytes each case must send from root to the bastion at least: to every target node, the
    registry blobs (compressed layers + config) of the case's images that the node lacks."""
    def blobs(refs):
        out = {}
        for ref in refs:
            out.update(testbed.blobs(ref))
        return out

    v1 = blobs(lists["cold"])
    per_node = {"cold": sum(v1.values()), "warm": 0,
                "bump": sum(s for d, s in blobs(lists["bump"]).items() if d not in v1)}
    return {case: n * len(testbed.targets) for case, n in per_node.items()}


# --- the tools --------------------------------------------------------------------------------


class Tool:
    def __init__(self, name, testbed):
        self.name, self.testbed = name, testbed
        self.cache = OUT / "cache" / name

    def reset(self):
        shutil.rmtree(self.cache, True)
        self.cache.mkdir(parents=True)

    def env(self):
        env = dict(os.environ)
        env.update(self.testbed.env)
        env["DOCKER_HOST"] = self.testbed.env["TESTBED_CONTROL_DOCKER_HOST"]
        return env

    def images_file(self, refs):
        path = OUT / "tmp" / f"{self.name}-images.txt"
        path.write_text("".join(r + "\n" for r in refs))
        return path

    def run(self, refs, logfile):
        """Runs once; returns the peak RSS in KB of its largest process (from /usr/bin/time)."""
        rss_file = OUT / "tmp" / "rss"
        cmd = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *self.command(refs)]
        with open(logfile, "a") as out:
            out.write(f"\n$ {' '.join(cmd)}\n")
            out.flush()
            status = subprocess.run(cmd, env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                                    cwd=REPO)
        self.after_run()
        if status.returncode != 0:
            raise RuntimeError(f"{self.name} failed (exit {status.returncode}): see {logfile}")
        return int(rss_file.read_text().split()[-1])

    def after_run(self):
        pass


class Dropship(Tool):
    """dropship as users run it with the localhost delegate: images fetched from the registry
    in-process and streamed to the nodes while they download (no Docker daemon involved). The
    test bed's inventory declares the registry's address as its mirror (its name resolves only
    inside the test bed), as a Kubespray inventory declares mirrors."""

    source = []

    def command(self, refs):
        # --delegate localhost: the peer's download_localhost (Kubespray would pull on node1).
        return [os.environ["DROPSHIP_BIN"], "push", "-i", self.testbed.env["TESTBED_INVENTORY"],
                "--images-file", str(self.images_file(refs)), "--cache-dir", str(self.cache),
                "--delegate", "localhost", *self.source]


class DropshipDocker(Dropship):
    """The previous flow, for comparison: the Docker daemon next to dropship pulls, `docker save`
    fills the cache, then the nodes are sent the cached layers."""

    source = ["--source", "docker"]


class Naive(Tool):
    def command(self, refs):
        return [str(BENCH_DIR / "naive.sh"), str(self.cache), str(self.images_file(refs))]


class Ansible(Tool):
    def command(self, refs):
        extra = OUT / "tmp" / "ansible-images.json"
        extra.write_text(json.dumps({"images": refs}))
        return [str(VENV_BIN / "ansible-playbook"), "-i", self.testbed.env["TESTBED_INVENTORY"],
                str(BENCH_DIR / "download.yml"), "-e", f"@{extra}",
                "-e", f"download_cache_dir={self.cache}",
                "-e", f"known_hosts_file={self.testbed.env['TESTBED_KNOWN_HOSTS']}"]

    def env(self):
        env = super().env()
        env["ANSIBLE_CONFIG"] = str(BENCH_DIR / "ansible.cfg")
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(self.control_dir)
        env["PATH"] = f"{VENV_BIN}:{env['PATH']}"
        return env

    @property
    def control_dir(self):
        return OUT / "tmp" / "ansible-cp"

    def after_run(self):
        """Kubespray keeps ssh masters 30 minutes: close ours, so every run connects afresh."""
        for sock in self.control_dir.glob("*"):
            subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "x"],
                           capture_output=True)


TOOLS = {"dropship": Dropship, "dropship-docker": DropshipDocker, "naive": Naive,
         "ansible": Ansible}


# --- the matrix -------------------------------------------------------------------------------


def reps():
    out = {"dropship": 3, "dropship-docker": 1, "naive": 1, "ansible": 1}
    for item in words("BENCH_REPS", ""):
        tool, n = item.split("=")
        out[tool] = int(n)
    return out


def measure(tool, testbed, lists, logfile):
    """One chain (cold, warm, bump) from a clean state; a list of run records."""
    testbed.clean()
    tool.reset()
    records = []
    for case in CASES:
        tx0, rx0 = testbed.link_bytes()
        start = time.monotonic()
        rss = tool.run(lists[case], logfile)
        wall = time.monotonic() - start
        tx1, rx1 = testbed.link_bytes()
        records.append({"case": case, "wall_s": round(wall, 3), "tx_bytes": tx1 - tx0,
                        "rx_bytes": rx1 - rx0, "peak_rss_kb": rss})
        log(f"  {tool.name:8} {case:4} {wall:7.2f} s  {(tx1 - tx0) / 1e6:8.1f} MB -> bastion  "
            f"rss {rss / 1024:.0f} MB")
    return records


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "tmp").mkdir(exist_ok=True)
    tools, counts = words("BENCH_TOOLS", "dropship naive ansible"), reps()
    testbed = Testbed()
    results = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
               "sessions": [], "groups": []}
    if os.environ.get("BENCH_MERGE") == "1":
        results = json.loads((OUT / "results.json").read_text())
    results["sessions"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                "reps": {t: counts[t] for t in tools}})
    logfile = OUT / "runs.log"
    with open(logfile, "a") as out:
        out.write(f"\n### session {results['sessions'][-1]}\n")
    try:
        fleets = [(n, r) for n in map(int, words("BENCH_NODES", "4 8"))
                  for r in words("BENCH_RUNTIMES", "docker containerd")]
        for nodes, runtime in fleets:
            log(f"test bed with {nodes} {runtime} nodes")
            testbed.up(nodes, runtime)
            for image_set in words("BENCH_SETS", "small large"):
                lists = image_lists(image_set)
                ensure_images(testbed, image_set, lists)
                need = must_cross(testbed, lists)
                for link in words("BENCH_LINKS", "off 200"):
                    mbit = None if link == "off" else int(link)
                    testbed.shape(mbit)
                    group = find_group(results, nodes, runtime, image_set, mbit)
                    group.update({"targets": len(testbed.targets), "must_cross_bytes": need})
                    log(f"{image_set} set, {nodes} {runtime} nodes, link {link}")
                    for rep in range(max(counts[t] for t in tools)):
                        for name in tools:
                            if rep < counts[name]:
                                tool = TOOLS[name](name, testbed)
                                group["runs"].setdefault(name, []).extend(
                                    measure(tool, testbed, lists, logfile))
                    write(results)
    finally:
        if testbed.env:
            testbed.shape(None)
    write(results)
    report = BENCH_DIR / "report.py"
    run([str(VENV_BIN / "python"), str(report), str(OUT / "results.json")])


def find_group(results, nodes, runtime, image_set, mbit):
    key = (nodes, runtime, image_set, mbit)
    for group in results["groups"]:
        if (group["nodes"], group.get("runtime", "docker"), group["set"], group["link_mbit"]) == key:
            return group
    group = {"nodes": nodes, "runtime": runtime, "set": image_set, "link_mbit": mbit, "runs": {}}
    results["groups"].append(group)
    return group


def write(results):
    summarize(results)
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")


def summarize(results):
    """Per group and case: the median of each tool, ratios to dropship, the link limit."""
    for group in results["groups"]:
        summary = {}
        for case in CASES:
            row = {}
            for tool, runs in group["runs"].items():
                mine = [r for r in runs if r["case"] == case]
                if mine:
                    row[tool] = {key: statistics.median(r[key] for r in mine)
                                 for key in ("wall_s", "tx_bytes", "rx_bytes", "peak_rss_kb")}
                    row[tool]["n"] = len(mine)
            if "dropship" in row:
                base = row["dropship"]["wall_s"]
                for tool in row:
                    row[tool]["times_dropship"] = round(row[tool]["wall_s"] / base, 2)
                if group["link_mbit"]:
                    limit = group["must_cross_bytes"][case] * 8 / (group["link_mbit"] * 1e6)
                    row["link_limit_s"] = round(limit, 3)
                    row["dropship_to_limit"] = round(base / limit, 2) if limit else None
            summary[case] = row
        group["summary"] = summary


if __name__ == "__main__":
    main()
