#!/usr/bin/env bash
# SSH transport throughput on the test bed: dropship's russh transport vs OpenSSH `ssh -J`,
# streaming MIB MiB into `cat >/dev/null` on nodes through the bastion, in the same run.
#
#   TESTBED_ID=<n> scripts/bench-ssh.sh            (MIB=1024 by default; the test bed must be up)
#
# Prints a Markdown table: MB/s, ratio to OpenSSH, peak RSS of the client process(es).
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${MIB:-1024}
eval "$(scripts/testbed.sh env)"
read -r -a NODES <<<"$TESTBED_NODES"
((${#NODES[@]} >= 3)) || { echo "bench-ssh: needs a test bed with 3 nodes or more" >&2; exit 2; }
THREE=$(IFS=,; echo "${NODES[*]:0:3}")

cargo build --release --locked --example ssh_throughput >&2
BIN=${CARGO_TARGET_DIR:-target}/release/examples/ssh_throughput
BYTES=$((MIB * 1024 * 1024))

# dropship LABEL ARGS...: run the example under /usr/bin/time; print "label|MB/s|rss KiB".
dropship() {
	local label=$1 out rss
	shift
	out=$(/usr/bin/time -f 'rss %M' "$BIN" -i "$TESTBED_INVENTORY" --mib "$MIB" "$@" 2>&1)
	rss=$(sed -n 's/^rss //p' <<<"$out")
	echo "$label|$(sed -n 's/.*aggregate=\([0-9.]*\) MB\/s.*/\1/p' <<<"$out")|$rss"
}

# openssh LABEL CONFIG NODE...: the same transfer with `ssh -J`, one ssh per node, all at once.
openssh() {
	local label=$1 config=$2 start end rss=0 node f
	shift 2
	local dir
	dir=$(mktemp -d)
	start=$(date +%s.%N)
	for node in "$@"; do
		addr_var="TESTBED_${node^^}_ADDR"
		head -c "$BYTES" /dev/zero |
			/usr/bin/time -o "$dir/$node" -f '%M' ssh -F "$config" -J "root@$TESTBED_BASTION" \
				"root@${!addr_var}" 'cat >/dev/null' &
	done
	wait
	end=$(date +%s.%N)
	for f in "$dir"/*; do rss=$((rss + $(tail -n 1 "$f"))); done
	rm -rf "$dir"
	echo "$label|$(awk -v b="$BYTES" -v n=$# -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", b * n / 1e6 / (e - s) }')|$rss"
}

# OpenSSH with dropship's default cipher on both hops (-o Ciphers would reach only the last hop).
GCM_CONFIG=$(mktemp)
trap 'rm -f "$GCM_CONFIG"' EXIT
{ cat "$TESTBED_SSH_CONFIG"; echo "  Ciphers aes256-gcm@openssh.com"; } >"$GCM_CONFIG"

results=(
	"$(openssh "OpenSSH ssh -J, 1 node (chacha20-poly1305, its default)" "$TESTBED_SSH_CONFIG" "${NODES[0]}")"
	"$(openssh "OpenSSH ssh -J, 1 node, aes256-gcm" "$GCM_CONFIG" "${NODES[0]}")"
	"$(dropship "dropship, 1 node (aes256-gcm, its default)" -l "${NODES[0]}" --pool 1)"
	"$(dropship "dropship, 1 node, chacha20-poly1305" -l "${NODES[0]}" --pool 1 --cipher chacha20-poly1305@openssh.com)"
	"$(openssh "OpenSSH ssh -J, 3 nodes (3 bastion connections)" "$TESTBED_SSH_CONFIG" "${NODES[@]:0:3}")"
	"$(openssh "OpenSSH ssh -J, 3 nodes, aes256-gcm" "$GCM_CONFIG" "${NODES[@]:0:3}")"
	"$(dropship "dropship, 3 nodes, 1 bastion connection" -l "$THREE" --pool 1)"
	"$(dropship "dropship, 3 nodes, pool of 2" -l "$THREE" --pool 2)"
	"$(dropship "dropship, 3 nodes, pool of 3" -l "$THREE" --pool 3)"
)

base1=$(cut -d'|' -f2 <<<"${results[0]}")
base3=$(cut -d'|' -f2 <<<"${results[4]}")
echo "$MIB MiB per node into \`cat >/dev/null\` through the bastion ($(nproc) cores):"
echo
echo "| run | MB/s (aggregate) | vs OpenSSH | peak RSS (client) |"
echo "|---|---:|---:|---:|"
for i in "${!results[@]}"; do
	IFS='|' read -r label mbs rss <<<"${results[$i]}"
	if ((i < 4)); then base=$base1; else base=$base3; fi
	ratio=$(awk -v a="$mbs" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
	echo "| $label | $mbs | ${ratio}× | $((rss / 1024)) MiB |"
done
