#!/usr/bin/env bash
# The dropship benchmark on the test bed: dropship push against Kubespray's download flow
# (scripts/bench/download.yml, run by Ansible) and a naive ssh loop (scripts/bench/naive.sh);
# cold, warm and version-bump pushes, unshaped and over a tc-shaped root->bastion link; small and
# large image sets; 4 and 8 nodes; fleets of Docker nodes and of containerd nodes. Prints a table, writes target/bench/results.json and
# target/bench/chart.png. Run as root. The full matrix takes about 40 minutes on 2 busy cores.
#
#   scripts/bench.sh                       the full matrix
#   BENCH_NODES=4 BENCH_SETS=small BENCH_LINKS=off BENCH_REPS="dropship=1 naive=1" \
#     BENCH_TOOLS="dropship naive" scripts/bench.sh            a quick run
#   scripts/bench.sh report                reprint the table and redraw the chart
#   scripts/bench.sh fleet                 the fleet case: 8, 32 and 100 containerd nodes, small
#                                          set, cold and warm (scripts/bench/fleet.py; ~20 minutes)
#   scripts/bench.sh fleet-report          reprint its table and redraw its chart
#   scripts/bench.sh fleet-scenario        100 nodes: 5 down, 3 Flatcar, 10 holding the images;
#                                          fails unless the report says so (~3 minutes)
#
# Selection (environment): BENCH_TOOLS ("dropship naive ansible"), BENCH_SETS ("small large"),
# BENCH_RUNTIMES ("docker containerd"),
# BENCH_NODES ("4 8"), BENCH_LINKS ("off 200": off or a tbf rate in Mbit/s), BENCH_REPS
# ("dropship=3 naive=1 ansible=1"), TESTBED_ID (0), DROPSHIP_BIN (default: a release build).
# The bench venv (target/bench/venv) holds Ansible with the ansible.posix collection (from the
# `ansible` package on PyPI; Galaxy is not needed) and matplotlib for the chart.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${BENCH_OUT:-$REPO/target/bench}
VENV=$OUT/venv
# ansible 12.x is the community package built on ansible-core 2.19 (the project's pin).
PIP_PACKAGES=(ansible-core==2.19.14 ansible==12.3.0 matplotlib==3.11.2)
export BENCH_OUT=$OUT

log() { echo "bench: $*" >&2; }

case ${1:-} in
report) exec "$VENV/bin/python" "$REPO/scripts/bench/report.py" "$OUT/results.json" "${@:2}" ;;
fleet-report) exec "$VENV/bin/python" "$REPO/scripts/bench/fleet_report.py" "$OUT/fleet.json" "${@:2}" ;;
fleet | fleet-scenario | "") ;;
*) log "unknown command '$1' (report, fleet, fleet-report or fleet-scenario)"; exit 2 ;;
esac
(($(id -u) == 0)) || { log "run as root (test bed, tc)"; exit 1; }

missing=()
command -v rsync >/dev/null || missing+=(rsync)
[[ -x /usr/bin/time ]] || missing+=(time)
command -v tc >/dev/null || missing+=(iproute2)
if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
"$REPO/scripts/install-deps.sh" --check >/dev/null 2>&1 || "$REPO/scripts/install-deps.sh"

venv_ok() { "$VENV/bin/pip" freeze 2>/dev/null | grep -qx "ansible==12.3.0" && [[ -x $VENV/bin/ansible-playbook ]]; }
if ! venv_ok; then
	log "making $VENV (${PIP_PACKAGES[*]})"
	python3 -m venv "$VENV"
	"$VENV/bin/pip" install -q --disable-pip-version-check "${PIP_PACKAGES[@]}"
fi

if [[ -z ${DROPSHIP_BIN:-} ]]; then
	(cd "$REPO" && cargo build --release --locked -q)
	DROPSHIP_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/dropship
fi
export DROPSHIP_BIN

if [[ ${1:-} == fleet ]]; then exec "$VENV/bin/python" "$REPO/scripts/bench/fleet.py"; fi
if [[ ${1:-} == fleet-scenario ]]; then BENCH_FLEET_MODE=scenario exec "$VENV/bin/python" "$REPO/scripts/bench/fleet.py"; fi
exec "$VENV/bin/python" "$REPO/scripts/bench/bench.py"
