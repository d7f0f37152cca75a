#!/usr/bin/env bash
# Blob download throughput of dropship's registry client from a docker-registry on loopback,
# against curl | sha256sum on the same blob: an image with one MIB MiB layer of random bytes
# (incompressible, like a gzipped layer), pushed through the registry's HTTP API.
#
#   scripts/bench-registry.sh            (MIB=200 by default; needs docker-registry and curl)
#
# Prints a Markdown table: MB/s, CPU seconds, peak RSS of the client.
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${MIB:-200}

cargo build --release --locked --example registry_pull >&2
BIN=${CARGO_TARGET_DIR:-target}/release/examples/registry_pull

WORK=$(mktemp -d)
REGISTRY_PID=
cleanup() {
	[[ -z $REGISTRY_PID ]] || kill "$REGISTRY_PID" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HOST=127.0.0.1:$PORT
cat >"$WORK/config.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $WORK/data}}
http: {addr: "$HOST", secret: bench}
EOF
docker-registry serve "$WORK/config.yml" 2>"$WORK/registry.log" &
REGISTRY_PID=$!
for _ in $(seq 100); do curl -sf "http://$HOST/v2/" >/dev/null && break; sleep 0.1; done

# upload FILE: push FILE as a blob of repository bench; print its digest.
upload() {
	local digest location
	digest=sha256:$(sha256sum "$1" | cut -d' ' -f1)
	location=$(curl -sf -X POST -D - -o /dev/null "http://$HOST/v2/bench/blobs/uploads/" |
		tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
	curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$1" \
		"$location&digest=$digest" >/dev/null
	echo "$digest"
}

head -c "$((MIB << 20))" /dev/urandom >"$WORK/layer"
echo '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$WORK/config"
LAYER=$(upload "$WORK/layer")
CONFIG=$(upload "$WORK/config")
cat >"$WORK/manifest" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
 "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$CONFIG","size":$(stat -c %s "$WORK/config")},
 "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"$LAYER","size":$(stat -c %s "$WORK/layer")}]}
EOF
curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
	--data-binary "@$WORK/manifest" "http://$HOST/v2/bench/manifests/1" >/dev/null

echo "| client | MB/s | CPU s | peak RSS |"
echo "|---|---|---|---|"
for _ in 1 2 3; do
	out=$("$BIN" "$HOST/bench:1" --plain-http)
	mbs=$(sed 's/.*"mb_per_s":\([0-9.]*\).*/\1/' <<<"$out")
	cpu=$(sed 's/.*"cpu_seconds":\([0-9.]*\).*/\1/' <<<"$out")
	rss=$(sed 's/.*"peak_rss_kib":\([0-9]*\).*/\1/' <<<"$out")
	echo "| dropship registry client | $mbs | $cpu | $((rss / 1024)) MiB |"
done
for _ in 1 2 3; do
	start=$(date +%s.%N)
	out=$(/usr/bin/time -f '%U %S %M' bash -c "curl -sf http://$HOST/v2/bench/blobs/$LAYER | sha256sum >/dev/null" 2>&1)
	end=$(date +%s.%N)
	read -r user sys rss <<<"$out"
	awk -v b="$((MIB << 20))" -v s="$start" -v e="$end" -v u="$user" -v y="$sys" -v r="$rss" \
		'BEGIN { printf "| curl \\| sha256sum | %.1f | %.2f | %d MiB (largest) |\n", b / 1e6 / (e - s), u + y, r / 1024 }'
done
