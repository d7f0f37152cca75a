#!/usr/bin/env bash
# Ingest benchmark for the image cache (a script, not a timed test).
#
#   scripts/bench-cache.sh [synthetic|docker] [LEVELS...]
#
#   synthetic (default)  a generated ~1 GB docker-archive (text-like data, 4 layers)
#   docker               a real ~1.1 GB image: /usr/bin and /usr/lib/x86_64-linux-gnu imported
#                        into the test bed's control daemon ($TESTBED_ID) and `docker save`d
#   LEVELS               zstd levels to try (default: 1 3 6 9)
#
# Prints one line per level: MB/s of ingest (uncompressed bytes per second), compression ratio,
# peak RSS of the ingesting process, and the export speeds (zstd pass-through, tar). For
# reference it also times `gzip -1` (what Kubespray's download_compress=1 does) and `zstd -3`.
# Work files go to $BENCH_DIR (default /tmp/dropship-bench), removed at the end.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SOURCE=${1:-synthetic}
shift || true
LEVELS=("${@:-1 3 6 9}")
read -r -a LEVELS <<<"${LEVELS[*]}"
WORK=${BENCH_DIR:-/tmp/dropship-bench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
BENCH=$CARGO_TARGET_DIR/release/examples/bench_ingest

log() { echo "bench-cache: $*" >&2; }

mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
(cd "$REPO" && cargo build --release --example bench_ingest >&2)

INPUT=$WORK/input.tar
case "$SOURCE" in
synthetic)
	log "writing a synthetic ~1 GB docker-archive"
	"$BENCH" synth "$INPUT" 1024
	;;
docker)
	eval "$("$REPO/scripts/testbed.sh" env)"
	export DOCKER_HOST=$TESTBED_CONTROL_DOCKER_HOST
	log "importing /usr/bin and /usr/lib/x86_64-linux-gnu into the control daemon"
	tar -C / -cf - usr/bin usr/lib/x86_64-linux-gnu 2>/dev/null | /usr/bin/docker import - dropship-bench/usr:1 >/dev/null
	/usr/bin/docker save dropship-bench/usr:1 >"$INPUT"
	/usr/bin/docker rmi dropship-bench/usr:1 >/dev/null
	;;
*) log "unknown source '$SOURCE' (synthetic or docker)"; exit 2 ;;
esac
log "input: $(du -m "$INPUT" | cut -f1) MB ($SOURCE), $(nproc) cores"

time_it() { local start end; start=$(date +%s.%N); "$@" >/dev/null; end=$(date +%s.%N); echo "$end - $start" | bc; }
size_mb=$(($(stat -c %s "$INPUT") / 1000000))
for tool in "gzip -1" "zstd -3 -T0"; do
	secs=$(time_it sh -c "$tool -c < '$INPUT' > '$WORK/ref.out'")
	out_mb=$(($(stat -c %s "$WORK/ref.out") / 1000000))
	printf '%-12s %7.1f MB/s  ratio %.2f\n' "$tool" "$(echo "$size_mb / $secs" | bc -l)" "$(echo "$size_mb / $out_mb" | bc -l)"
done
rm -f "$WORK/ref.out"

printf '%-6s %9s %7s %9s %12s %10s\n' level "MB/s" ratio "RSS MB" "export zst" "export tar"
for level in "${LEVELS[@]}"; do
	"$BENCH" ingest "$INPUT" "$level" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("%-6d %9.1f %7.2f %9.1f %12.1f %10.1f" % (r["level"], r["ingest_mb_per_s"], r["ratio"], r["peak_rss_mb"],
      r["export_zstd_mb_per_s"], r["export_tar_mb_per_s"]))'
done
