#!/usr/bin/env bash
# The naive loop an operator writes by hand: pull and `docker save | gzip -1` each image once,
# then for every node, one after the other, `ssh -J bastion node 'gunzip | docker load' < file`
# (`ctr -n k8s.io images import -` on containerd nodes, `podman load` on CRI-O ones), skipping
# Flatcar nodes. No cache between runs, no check of what a node already has.
#
#   scripts/bench/naive.sh WORKDIR IMAGES_FILE
# with DOCKER_HOST naming the local daemon and the test bed's env (TESTBED_*) exported.
set -euo pipefail

work=$1 images_file=$2
mapfile -t images < <(grep -v '^\s*\(#\|$\)' "$images_file")
ssh_node() { ssh -F "$TESTBED_SSH_CONFIG" -J "root@$TESTBED_BASTION" "root@$1" "${@:2}"; }

mkdir -p "$work"
files=()
for image in "${images[@]}"; do
	file=$work/$(echo "$image" | tr '/:' '__').tar.gz
	docker pull -q "$image" >/dev/null
	docker save "$image" | gzip -1 >"$file"
	files+=("$file")
done
for node in $TESTBED_NODES; do
	var=TESTBED_${node^^}_ADDR
	addr=${!var}
	var=TESTBED_${node^^}_RUNTIME
	case ${!var} in
	containerd) load='ctr -n k8s.io images import -' ;;
	crio) load='podman load' ;;
	*) load='docker load' ;;
	esac
	if ssh_node "$addr" grep -q '^ID=flatcar' /etc/os-release; then continue; fi
	for file in "${files[@]}"; do ssh_node "$addr" "gunzip | $load" <"$file" >/dev/null; done
done
