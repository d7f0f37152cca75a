#!/usr/bin/env bash
# The dropship test bed: a bastion and N nodes in network namespaces on this machine, each with
# a real sshd and a real container runtime, two registries served in the bastion, and a
# "control" dockerd in the root namespace (the localhost download delegate).
#
#   scripts/testbed.sh up [N]        bring instance $TESTBED_ID (default 0) up with N nodes (default 5)
#   scripts/testbed.sh down [--purge] stop what `up` started, remove namespaces and links
#                                     (--purge also deletes keys, registry data and the inventory)
#   scripts/testbed.sh status        say what runs, and the memory it uses
#   scripts/testbed.sh env           print shell variables a test needs (eval "$(... env)")
#   scripts/testbed.sh ssh HOST [CMD...]        ssh -J through the bastion, as root
#   scripts/testbed.sh exec HOST CMD...         run CMD inside HOST's namespaces (no SSH)
#   scripts/testbed.sh start|stop HOST SERVER   start or stop one server (failure tests): sshd, or
#                                     the node's dockerd or containerd; the bastion runs only sshd
#   scripts/testbed.sh cri-images NODE          a containerd node's images as kubelet sees them: JSON
#                                     from the CRI image service (runtime.v1.ImageService/ListImages)
#
# What `up` builds, chosen by variables it records (`up` again with other values: `down` first):
#   TESTBED_RUNTIMES   the nodes' container runtimes, cycled over node1..N; default
#                      "containerd docker crio containerd docker". So the default 5 nodes are a mixed
#                      fleet: node1 containerd (the default download delegate, first
#                      kube_control_plane host, as on a default Kubespray cluster), node2 docker (with
#                      the RSA host key), node3 crio, node4 containerd that says it is aarch64, node5
#                      docker that says it is Flatcar (os-release).
#                      For scale: TESTBED_RUNTIMES=containerd scripts/testbed.sh up 100.
#     docker           dockerd; /run/docker.sock is its socket, `docker` is Debian's client.
#     containerd       containerd + runc alone, no docker. Its config is the node's
#                      /etc/containerd/config.toml (version 2, CRI plugin on, snapshotter overlayfs or
#                      native where overlay cannot mount), its socket /run/containerd/containerd.sock,
#                      so `ctr` over SSH needs no flags; registry hosts in /etc/containerd/certs.d
#                      (Kubespray's config_path; registry.testbed:5000 is plain HTTP there). ctr 1.6
#                      reads that directory only with `--hosts-dir /etc/containerd/certs.d`.
#     crio             a CRI-O-style node: podman and skopeo on containers-storage (graphroot and
#                      runroot under the node's state, /etc/containers/storage.conf its own), no
#                      docker, no containerd. No daemon: nothing to start or stop but sshd.
#   TESTBED_AARCH64_NODES   nodes whose `uname` and `arch` say aarch64 instead of x86_64 (default
#                      node4 when it runs containerd; "" for none). A wrapper over /usr/bin/uname in
#                      that node's mount namespace only: the kernel, its programs and any image it
#                      runs stay x86_64 (an arm64 image cannot run there), and Python's os.uname(), so
#                      Ansible's ansible_architecture fact, still says x86_64. It changes what the
#                      node says when asked with `uname -m`, which is what tools run over SSH ask.
#   TESTBED_FLATCAR_NODES   nodes whose /etc/os-release says Flatcar Container Linux (default: the
#                      last node; "" for none). dropship skips them, as Kubespray does.
#   TESTBED_DISCARD_NODES   containerd nodes whose CRI plugin has discard_unpacked_layers = true
#                      (Kubespray's default for containerd < 2.1: the node keeps snapshots, not the
#                      compressed layers); default none.
#   TESTBED_PARALLEL   how many nodes are started, waited for or stopped at once (default 8).
# On every node the programs of the other runtimes are absent (a read-only overlay with whiteouts
# over /usr/bin, /usr/sbin and /usr/local/bin in the node's mount namespace).
#
# Layout of instance n (0 <= n <= 127), everything derived from TESTBED_ID:
#   namespaces   ds<n>-bastion, ds<n>-node1..N; root end of the bastion link: ds<n>-root
#   addresses    root 198.18.(2n).1 <-> bastion 198.18.(2n).2; cluster 198.18.(2n+1).0/24 on a
#                bridge in the bastion (bastion .1, node i .(10+i), so N <= 240). The bastion does
#                not forward.
#   state        /var/lib/dropship-testbed/<n> (keys, configs, pid files, logs, runtime data)
#   inventory    <repo>/inventory/testbed/ (n=0) or <repo>/inventory/testbed-<n>/, with
#                container_manager=containerd|docker|crio on each node (Kubespray's variable)
#   registries   registry.testbed:5000, open, plain HTTP; secure.testbed:5443, HTTPS with a test CA
#                made here and htpasswd (basic) auth, holding dropship/private:v1. Both served in the
#                bastion; every daemon resolves those names to the bastion address it can reach
#                (hosts files in private mount namespaces) and trusts the CA; from the root
#                namespace they are reached by address (TESTBED_REGISTRY_URL, TESTBED_SECURE_URL).
# Each node's sshd and runtime share one private mount (and UTS) namespace, held open by a `sleep`
# process: there /tmp, /run and /root are the node's own, and so are /etc/hosts, /etc/containerd,
# /etc/containers and /etc/docker (files under /etc/netns/<namespace>/, which `ip netns exec`
# binds over their /etc namesakes), so tools over SSH, with sudo too, need no variables.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$REPO/scripts/testbed.sh"
VENV=$REPO/.venv
ID=${TESTBED_ID:-0}
if ! [[ $ID =~ ^[0-9]+$ ]] || ((ID > 127)); then echo "testbed: TESTBED_ID must be 0..127, got '$ID'" >&2; exit 2; fi
export TESTBED_ID=$ID
PARALLEL=${TESTBED_PARALLEL:-8}
if ! [[ $PARALLEL =~ ^[1-9][0-9]*$ ]]; then echo "testbed: TESTBED_PARALLEL must be a positive number" >&2; exit 2; fi

P="ds$ID"
STATE=/var/lib/dropship-testbed/$ID
NET_ROOT=198.18.$((2 * ID))
NET_CLUSTER=198.18.$((2 * ID + 1))
ROOT_ADDR=$NET_ROOT.1
BASTION_ADDR=$NET_ROOT.2
BASTION_CLUSTER_ADDR=$NET_CLUSTER.1
REGISTRY_NAME=registry.testbed
REGISTRY=$REGISTRY_NAME:5000
SECURE_NAME=secure.testbed
SECURE_REGISTRY=$SECURE_NAME:5443
SECURE_USER=dropship
ROOT_LINK=$P-root
BASTION_NS=$P-bastion
if ((ID == 0)); then INVENTORY_DIR=$REPO/inventory/testbed; else INVENTORY_DIR=$REPO/inventory/testbed-$ID; fi
DOCKERD=/usr/sbin/dockerd
[[ -x $DOCKERD ]] || DOCKERD=/usr/bin/dockerd
DOCKER=/usr/bin/docker
SSHD=/usr/sbin/sshd
CONTAINERD=/usr/bin/containerd
CTR=/usr/bin/ctr
DEFAULT_RUNTIMES="containerd docker crio containerd docker"
# What each runtime's node must not have: the programs of the others. Only those that exist here.
# shellcheck disable=SC2034 # read as ${!var} in write_layers
HIDDEN_docker="/usr/bin/podman /usr/bin/skopeo"
# shellcheck disable=SC2034
HIDDEN_containerd="/usr/bin/docker /usr/local/bin/docker /usr/bin/docker-init /usr/sbin/dockerd /usr/sbin/docker-proxy $HIDDEN_docker"
# shellcheck disable=SC2034
HIDDEN_crio="/usr/bin/docker /usr/local/bin/docker /usr/bin/docker-init /usr/sbin/dockerd /usr/sbin/docker-proxy /usr/bin/containerd /usr/bin/ctr"
LAYERED_DIRS="/usr/bin /usr/sbin /usr/local/bin"

log() { echo "testbed[$ID]: $*" >&2; }
die() { log "error: $*"; exit 1; }

node_ns() { echo "$P-$1"; }
node_addr() { echo "$NET_CLUSTER.$((10 + ${1#node}))"; }
node_count() { echo "$NODE_COUNT"; }
node_names() { local i; for ((i = 1; i <= NODE_COUNT; i++)); do echo "node$i"; done; }
control_socket() { echo "$STATE/control/docker.sock"; }
node_socket() { echo "$STATE/$1/docker.sock"; }
node_etc() { echo "/etc/netns/$(node_ns "$1")"; } # NODE: what the node sees as /etc/<file>
# The node's /run/containerd, seen from the root namespace: its socket is reachable from here.
containerd_address() { echo "$STATE/$1/containerd/run/containerd.sock"; }

# --- the fleet's layout: the node -> runtime table and the per-node options `up` recorded ------

declare -A RUNTIME=() AARCH64=() DISCARD=() FLATCAR=()
NODE_COUNT=0
load_layout() {
	local node runtime
	RUNTIME=() AARCH64=() DISCARD=() FLATCAR=() NODE_COUNT=0
	[[ ! -s $STATE/nodes ]] || read -r NODE_COUNT <"$STATE/nodes"
	[[ -s $STATE/runtimes ]] || return 0
	while read -r node runtime; do RUNTIME[$node]=$runtime; done <"$STATE/runtimes"
	local words=()
	[[ ! -s $STATE/aarch64-nodes ]] || read -r -a words <"$STATE/aarch64-nodes"
	for node in "${words[@]}"; do AARCH64[$node]=1; done
	words=()
	[[ ! -s $STATE/discard-nodes ]] || read -r -a words <"$STATE/discard-nodes"
	for node in "${words[@]}"; do DISCARD[$node]=1; done
	words=()
	# An instance recorded before TESTBED_FLATCAR_NODES existed has its last node Flatcar.
	if [[ -e $STATE/flatcar-nodes ]]; then read -r -a words <"$STATE/flatcar-nodes" || true; else words=("node$NODE_COUNT"); fi
	for node in "${words[@]}"; do FLATCAR[$node]=1; done
}
load_layout

nodes_running() { # RUNTIME: the nodes that run it
	local node
	for node in $(node_names); do [[ ${RUNTIME[$node]} != "$1" ]] || echo "$node"; done
}
node_server() { # NODE: its runtime's daemon (none for crio: podman has none)
	case ${RUNTIME[$1]} in docker) echo dockerd ;; containerd) echo containerd ;; esac
}
node_arch() { if [[ -n ${AARCH64[$1]:-} ]]; then echo aarch64; else echo x86_64; fi; }

# layout N: the table `up` would record from TESTBED_RUNTIMES, TESTBED_AARCH64_NODES,
# TESTBED_DISCARD_NODES, TESTBED_FLATCAR_NODES
layout() {
	local n=$1 i runtimes node runtime
	read -r -a runtimes <<<"${TESTBED_RUNTIMES:-$DEFAULT_RUNTIMES}"
	((${#runtimes[@]})) || die "TESTBED_RUNTIMES is empty"
	for runtime in "${runtimes[@]}"; do
		[[ $runtime =~ ^(docker|containerd|crio)$ ]] || die "unknown runtime '$runtime' in TESTBED_RUNTIMES (docker, containerd or crio)"
	done
	for ((i = 1; i <= n; i++)); do echo "runtime node$i ${runtimes[(i - 1) % ${#runtimes[@]}]}"; done
	local default_aarch64=
	((n < 4)) || [[ ${runtimes[3 % ${#runtimes[@]}]} != containerd ]] || default_aarch64=node4
	for node in ${TESTBED_AARCH64_NODES-$default_aarch64}; do echo "aarch64 $node"; done
	for node in ${TESTBED_DISCARD_NODES:-}; do echo "discard $node"; done
	for node in ${TESTBED_FLATCAR_NODES-node$n}; do echo "flatcar $node"; done
}

record_layout() { # N
	local n=$1 table kind node runtime
	table=$(layout "$n") || exit 1
	while read -r kind node runtime; do
		if ! [[ $node =~ ^node[0-9]+$ ]] || ((${node#node} < 1 || ${node#node} > n)); then
			die "no such node: $node (in TESTBED_${kind^^}_NODES)"
		fi
		[[ $kind != discard ]] || grep -qx "runtime $node containerd" <<<"$table" || die "$node does not run containerd (TESTBED_DISCARD_NODES)"
	done <<<"$table"
	section() { awk -v kind="$1" '$1 == kind { $1 = ""; print substr($0, 2) }' <<<"$table"; }
	local new
	new=$(
		echo "$n"
		section runtime
		section aarch64 | sort -u | xargs
		section discard | sort -u | xargs
		section flatcar | sort -u | xargs
	)
	if is_up && [[ $new != "$(recorded_layout)" ]]; then
		die "instance $ID is up with another layout ($(node_count) nodes; see status): run scripts/testbed.sh down first"
	fi
	echo "$n" >"$STATE/nodes"
	section runtime >"$STATE/runtimes"
	section aarch64 | sort -u | xargs >"$STATE/aarch64-nodes"
	section discard | sort -u | xargs >"$STATE/discard-nodes"
	section flatcar | sort -u | xargs >"$STATE/flatcar-nodes"
	load_layout
}

recorded_layout() {
	cat "$STATE/nodes" "$STATE/runtimes" "$STATE/aarch64-nodes" "$STATE/discard-nodes" "$STATE/flatcar-nodes" 2>/dev/null
}

# --- processes: every one we start has a pid file under $STATE/run --------------------------

pidfile() { echo "$STATE/run/$1.pid"; }

started() { # GLOB...: the names of the pid files matching a GLOB
	local glob file
	for glob; do
		for file in "$STATE/run"/$glob.pid; do [[ ! -e $file ]] || basename "$file" .pid; done
	done
}

# A zombie counts as gone: our daemons are orphans, reaped by init whenever it gets to it.
# (Builtins only: status and the waits call it for every node.)
alive() {
	local stat
	{ read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
	[[ ${stat##*) } != Z* ]]
}

# The pid in a pid file, if that process still runs the program we started.
running_pid() {
	local file=$STATE/run/$1.pid pid exe # (not $(pidfile): no subshell for every node in status)
	[[ -s $file ]] || return 1
	read -r pid exe <"$file"
	# The link's text, not the file: a node's overlay over /usr/bin makes its own inode of it.
	alive "$pid" && [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$exe" ]] && echo "$pid"
}

# start NAME PROGRAM [ARGS...]: run in the background, output to $STATE/log/NAME.log.
# PROGRAM is what the process finally execs into (the wrappers before it exec, never fork).
start_bg() {
	local name=$1 exe
	shift
	exe=$(readlink -f "$(command -v "$1")")
	shift
	# From a subshell, so that it is no child of this shell: parallel's `wait -n` waits for its
	# own jobs only.
	(
		setsid "$@" </dev/null >>"$STATE/log/$name.log" 2>&1 &
		echo "$! $exe" >"$STATE/run/$name.pid"
	)
}

# stop_bg NAME...: TERM to all of them at once, wait up to 15 s for them all, then KILL the rest.
stop_bg() {
	local name pid i
	local -A pids=()
	for name; do
		if pid=$(running_pid "$name"); then
			kill -TERM "$pid" 2>/dev/null || true
			pids[$pid]=$name
		fi
	done
	for ((i = 0; i < 300 && ${#pids[@]}; i++)); do
		for pid in "${!pids[@]}"; do alive "$pid" || unset "pids[$pid]"; done
		((${#pids[@]} == 0)) || sleep 0.05
	done
	for pid in "${!pids[@]}"; do
		log "${pids[$pid]} (pid $pid) did not stop in 15 s: killing it"
		kill -KILL "$pid" 2>/dev/null || true
	done
	local files=()
	for name; do files+=("$STATE/run/$name.pid"); done
	((${#files[@]} == 0)) || rm -f "${files[@]}"
}

# wait_for WHAT SECONDS COMMAND...: poll until COMMAND succeeds.
wait_for() {
	local what=$1 deadline=$((SECONDS + $2))
	shift 2
	local polls=0
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || return 1
		# Ten times a second for a second, then twice: a hundred nodes that wait on a busy
		# machine should not keep it busier with their probes.
		if ((polls++ < 10)); then sleep 0.1; else sleep 0.5; fi
	done
	log "$what ready"
}

# parallel LIMIT FUNCTION ARG...: FUNCTION ARG for each ARG, at most LIMIT at once, each in a
# subshell; fails (after all have ended) if one failed. This shell has no other children to wait
# for (start_bg's daemons are its grandchildren).
parallel() {
	local limit=$1 fn=$2 arg failed=0 running=0
	shift 2
	for arg; do
		if ((running >= limit)); then
			wait -n || failed=1
			running=$((running - 1))
		fi
		"$fn" "$arg" &
		running=$((running + 1))
	done
	while ((running > 0)); do
		wait -n || failed=1
		running=$((running - 1))
	done
	return "$failed"
}

# shellcheck disable=SC2046 # one node a word
each_node() { parallel "$PARALLEL" "$1" $(node_names); } # FUNCTION: FUNCTION NODE for every node

# --- keys, configs ----------------------------------------------------------------------------

make_key() { # FILE TYPE COMMENT
	[[ -s $1 ]] || ssh-keygen -q -t "$2" -N '' -C "$3" -f "$1"
}

make_host_key() { make_key "$STATE/keys/${1}_ed25519" ed25519 "testbed$ID-$1"; } # HOST

make_keys() {
	mkdir -p "$STATE/keys"
	make_key "$STATE/keys/id_ed25519" ed25519 "dropship-testbed-$ID client"
	cp "$STATE/keys/id_ed25519.pub" "$STATE/keys/authorized_keys"
	make_host_key bastion
	each_node make_host_key || die "could not make the nodes' host keys"
	# node2 also has an RSA host key, and known_hosts records only that one for node2: a client
	# must negotiate rsa-sha2-* (the host key algorithm order pitfall).
	(($(node_count) < 2)) || make_key "$STATE/keys/node2_rsa" rsa "testbed$ID-node2"
}

# The secure registry's test CA, its server certificate (for its name and both bastion
# addresses), a user and a random password, and the htpasswd (bcrypt) file the registry reads.
make_secure_registry_keys() {
	local k=$STATE/keys
	if [[ ! -s $k/secure-ca.crt ]]; then
		openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -days 3650 \
			-subj "/CN=dropship test bed $ID CA" -keyout "$k/secure-ca.key" -out "$k/secure-ca.crt" \
			-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
		rm -f "$k/secure.crt"
	fi
	if [[ ! -s $k/secure.crt ]]; then
		openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj "/CN=$SECURE_NAME" \
			-keyout "$k/secure.key" 2>/dev/null |
			openssl x509 -req -sha256 -days 3650 -CA "$k/secure-ca.crt" -CAkey "$k/secure-ca.key" \
				-set_serial "0x$(openssl rand -hex 8)" -out "$k/secure.crt" -extfile <(
					echo "subjectAltName=DNS:$SECURE_NAME,IP:$BASTION_ADDR,IP:$BASTION_CLUSTER_ADDR"
					echo "basicConstraints=critical,CA:FALSE"
					echo "keyUsage=critical,digitalSignature"
					echo "extendedKeyUsage=serverAuth"
				) 2>/dev/null
	fi
	[[ -s $k/secure.password ]] || openssl rand -hex 16 >"$k/secure.password"
	[[ -s $k/secure.htpasswd ]] || htpasswd -B -i -n "$SECURE_USER" <"$k/secure.password" >"$k/secure.htpasswd" 2>/dev/null
}

host_key_files() { # HOST: the host keys its sshd offers
	echo "$STATE/keys/${1}_ed25519"
	[[ ! -s $STATE/keys/${1}_rsa ]] || echo "$STATE/keys/${1}_rsa"
}

# MaxStartups and MaxSessions stay OpenSSH's defaults (10:30:100 and 10): a client must live
# with them. MaxSessions counts shell/exec/subsystem sessions of one connection, not the
# direct-tcpip channels of a jump, so one bastion connection carries a tunnel per node.
write_sshd_config() { # HOST FORWARDING
	local host=$1 key
	{
		echo "# dropship test bed $ID: $host"
		echo "Port 22"
		echo "ListenAddress 0.0.0.0"
		for key in $(host_key_files "$host"); do echo "HostKey $key"; done
		echo "PidFile none"
		echo "AuthorizedKeysFile $STATE/keys/authorized_keys"
		echo "PermitRootLogin prohibit-password"
		echo "PasswordAuthentication no"
		echo "KbdInteractiveAuthentication no"
		echo "UsePAM no"
		echo "StrictModes no"
		echo "AllowTcpForwarding $2"
		echo "AllowAgentForwarding no"
		echo "X11Forwarding no"
		echo "PrintMotd no"
		echo "Subsystem sftp /usr/lib/openssh/sftp-server"
	} >"$STATE/etc/$host.sshd_config"
}

write_known_hosts() {
	local node
	{
		echo "$BASTION_ADDR $(cut -d' ' -f1-2 "$STATE/keys/bastion_ed25519.pub")"
		for node in $(node_names); do
			if [[ -s $STATE/keys/${node}_rsa ]]; then
				echo "$(node_addr "$node") $(cut -d' ' -f1-2 "$STATE/keys/${node}_rsa.pub")"
			else
				echo "$(node_addr "$node") $(cut -d' ' -f1-2 "$STATE/keys/${node}_ed25519.pub")"
			fi
		done
	} >"$STATE/keys/known_hosts"
	# For the system ssh: command-line options do not reach the -J hop, a config file does.
	cat >"$STATE/keys/ssh_config" <<EOF2
Host *
  User root
  IdentityFile $STATE/keys/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $STATE/keys/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 5
EOF2
}

write_control_files() {
	mkdir -p "$STATE/control" "/etc/netns/$BASTION_NS"
	{ cat /etc/hosts; echo "$BASTION_ADDR $REGISTRY_NAME $SECURE_NAME"; } >"$STATE/control/hosts"
	write_docker_etc "$STATE/control/etc-docker"
}

write_docker_etc() { # DIR: a daemon's /etc/docker: only the certs.d entry that trusts the test CA
	mkdir -p "$1/certs.d/$SECURE_REGISTRY"
	cp "$STATE/keys/secure-ca.crt" "$1/certs.d/$SECURE_REGISTRY/ca.crt"
}

# Everything a node reads from /etc, under /etc/netns/<its namespace>/ (ip netns exec binds each
# entry there over its /etc namesake).
write_node_files() { # NODE
	local node=$1 etc
	etc=$(node_etc "$node")
	rm -rf "$etc"
	mkdir -p "$etc"
	{ cat /etc/hosts; echo "127.0.1.1 $node"; echo "$BASTION_CLUSTER_ADDR $REGISTRY_NAME $SECURE_NAME"; } >"$etc/hosts"
	echo "$node" >"$etc/hostname"
	# Read through the /etc/os-release symlink, this file is what `cat /etc/os-release` shows.
	[[ -z ${FLATCAR[$node]:-} ]] || write_flatcar_os_release "$etc/os-release"
	case ${RUNTIME[$node]} in
	docker) write_docker_etc "$etc/docker" ;;
	containerd) write_containerd_etc "$node" "$etc/containerd" ;;
	crio) write_containers_etc "$node" "$etc/containers" ;;
	esac
}

write_flatcar_os_release() {
	cat >"$1" <<'EOF2'
NAME="Flatcar Container Linux by Kinvolk"
ID=flatcar
ID_LIKE=coreos
VERSION=3975.2.0
VERSION_ID=3975.2.0
BUILD_ID=2024-09-11-1942
SYSEXT_LEVEL=1.0
PRETTY_NAME="Flatcar Container Linux by Kinvolk 3975.2.0 (Oklo)"
ANSI_COLOR="38;5;75"
HOME_URL="https://flatcar.org/"
BUG_REPORT_URL="https://issues.flatcar.org"
FLATCAR_BOARD="amd64-usr"
CPE_NAME="cpe:2.3:o:flatcar-linux:flatcar_linux:3975.2.0:*:*:*:*:*:*:*"
EOF2
}

# The node's /etc/containerd: config.toml where containerd and ctr look by default, and
# certs.d/<registry>/hosts.toml as Kubespray writes them (config_path of the CRI registry).
write_containerd_etc() { # NODE DIR
	local node=$1 dir=$2 discard=false
	[[ -z ${DISCARD[$node]:-} ]] || discard=true
	mkdir -p "$dir/certs.d/$REGISTRY" "$dir/certs.d/$SECURE_REGISTRY" "$STATE/$node/containerd/run"
	cat >"$dir/config.toml" <<EOF2
# dropship test bed $ID: $node (written by scripts/testbed.sh up)
version = 2
root = "$STATE/$node/containerd/root"
state = "/run/containerd"
# Snapshotters that cannot work here; skipping them keeps start-up quiet and quick.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/$node/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  # No pod runs here: only the image service matters, which needs no CNI.
  sandbox_image = "registry.k8s.io/pause:3.6"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "$(cat "$STATE/etc/snapshotter")"
    discard_unpacked_layers = $discard
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
EOF2
	cat >"$dir/certs.d/$REGISTRY/hosts.toml" <<EOF2
server = "http://$REGISTRY"

[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve", "push"]
EOF2
	cp "$STATE/keys/secure-ca.crt" "$dir/certs.d/$SECURE_REGISTRY/ca.crt"
	cat >"$dir/certs.d/$SECURE_REGISTRY/hosts.toml" <<EOF2
server = "https://$SECURE_REGISTRY"
ca = "/etc/containerd/certs.d/$SECURE_REGISTRY/ca.crt"

[host."https://$SECURE_REGISTRY"]
  capabilities = ["pull", "resolve", "push"]
  ca = "/etc/containerd/certs.d/$SECURE_REGISTRY/ca.crt"
EOF2
}

# The node's /etc/containers for podman and skopeo: its own containers-storage, the open
# registry insecure (plain HTTP), the secure one trusted through certs.d.
write_containers_etc() { # NODE DIR
	local node=$1 dir=$2 driver=overlay
	[[ $(cat "$STATE/etc/snapshotter") == overlayfs ]] || driver=vfs
	mkdir -p "$dir/certs.d/$SECURE_REGISTRY" "$STATE/$node/containers"
	cat >"$dir/storage.conf" <<EOF2
# dropship test bed $ID: $node (written by scripts/testbed.sh up)
[storage]
driver = "$driver"
graphroot = "$STATE/$node/containers/storage"
runroot = "$STATE/$node/containers/run"
EOF2
	cat >"$dir/containers.conf" <<EOF2
# dropship test bed $ID: $node. No systemd or journald here; state under the node's own.
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$STATE/$node/containers/tmp"

[network]
network_config_dir = "$STATE/$node/containers/networks"
EOF2
	cat >"$dir/registries.conf" <<EOF2
unqualified-search-registries = []

[[registry]]
location = "$REGISTRY"
insecure = true
EOF2
	echo '{"default": [{"type": "insecureAcceptAnything"}]}' >"$dir/policy.json"
	cp "$STATE/keys/secure-ca.crt" "$dir/certs.d/$SECURE_REGISTRY/ca.crt"
}

# $STATE/etc/layers/<runtime>-<arch>/<dir>: a read-only overlay layer for each of $LAYERED_DIRS,
# mounted in the namespace of every node of that runtime and architecture (made once, shared): a
# whiteout hides a program of another runtime; on an aarch64 node, uname and arch are wrappers
# that say aarch64 where the real uname says x86_64.
node_layers() { echo "$STATE/etc/layers/${RUNTIME[$1]}-$(node_arch "$1")"; } # NODE

write_layers() { # RUNTIME ARCH
	local layers=$STATE/etc/layers/$1-$2 path var=HIDDEN_$1
	[[ ! -d $layers ]] || return 0
	rm -rf "$layers.new"
	mkdir -p "$layers.new"
	for path in ${!var}; do
		[[ -e $path || -L $path ]] || continue
		mkdir -p "$layers.new${path%/*}"
		mknod "$layers.new$path" c 0 0
	done
	if [[ $1 == docker && -e /usr/local/bin/docker && $DOCKER != /usr/local/bin/docker ]]; then
		mkdir -p "$layers.new/usr/local/bin" # Debian's client, not another one that may be there
		ln -s "$DOCKER" "$layers.new/usr/local/bin/docker"
	fi
	if [[ $2 == aarch64 ]]; then
		mkdir -p "$layers.new/usr/bin"
		printf '%s\n' '#!/bin/bash' "# dropship test bed: this node says it is aarch64 (scripts/testbed.sh, TESTBED_AARCH64_NODES)." \
			'set -o pipefail' "$STATE/etc/uname.real \"\$@\" | sed 's/x86_64/aarch64/g'" >"$layers.new/usr/bin/uname"
		printf '%s\n' '#!/bin/sh' 'exec uname -m' >"$layers.new/usr/bin/arch"
		chmod 755 "$layers.new/usr/bin/uname" "$layers.new/usr/bin/arch"
	fi
	mv "$layers.new" "$layers"
}

write_daemon_files() {
	echo '{}' >"$STATE/etc/daemon.json" # so a host's /etc/docker/daemon.json never applies
	cp /usr/bin/uname "$STATE/etc/uname.real"
	local node
	for node in $(node_names); do echo "${RUNTIME[$node]} $(node_arch "$node")"; done | sort -u |
		while read -r runtime arch; do write_layers "$runtime" "$arch"; done
	write_registry_config registry 5000 "$STATE/registry" ""
	write_registry_config secure-registry 5443 "$STATE/secure-registry" "$(
		cat <<EOF2
auth:
  htpasswd:
    realm: dropship-testbed-$ID
    path: $STATE/keys/secure.htpasswd
EOF2
	)"
	cat >>"$STATE/etc/secure-registry.yml" <<EOF2
  tls:
    certificate: $STATE/keys/secure.crt
    key: $STATE/keys/secure.key
EOF2
	# The cgroup mounts of the root namespace, replayed in each node's mount namespace (ip netns
	# exec mounts a fresh /sys, and dockerd refuses to start without the cgroup hierarchies).
	awk '{ for (i = 7; $i != "-"; i++); mp = $5; fs = $(i + 1); opts = $(i + 3)
	       if (mp !~ "^/sys/fs/cgroup") next
	       if (fs == "tmpfs") opts = "mode=755"
	       else if (fs == "cgroup2") opts = "rw"
	       else { gsub(/(^|,)r[wo](,|$)/, ",", opts); gsub(/^,+|,+$/, "", opts)
	              if (opts ~ /^name=[^,]*$/) opts = "none," opts }
	       print mp, fs, opts }' /proc/self/mountinfo >"$STATE/etc/cgroup-mounts"
	# containerd's and podman's image stores: overlay where it mounts on $STATE's filesystem,
	# else containerd's native snapshotter and podman's vfs driver (slower, more disk).
	local probe=$STATE/etc/overlay-probe
	mkdir -p "$probe"/{lower,upper,work,merged}
	if unshare -m mount -t overlay overlay -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" "$probe/merged" 2>/dev/null; then
		echo overlayfs >"$STATE/etc/snapshotter"
	else
		log "overlay does not mount on $STATE here: containerd nodes use the native snapshotter, podman vfs"
		echo native >"$STATE/etc/snapshotter"
	fi
	rm -rf "$probe"
}

write_registry_config() { # NAME PORT DIR EXTRA_YAML
	mkdir -p "$3"
	cat >"$STATE/etc/$1.yml" <<EOF2
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $3
  delete:
    enabled: true
${4:+$4
}http:
  addr: :$2
  secret: dropship-testbed-$ID-$1
EOF2
}

# --- network ----------------------------------------------------------------------------------

ns_exists() { [[ -e /run/netns/$1 ]]; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

make_network() {
	ns_exists "$BASTION_NS" || ip netns add "$BASTION_NS"
	in_ns "$BASTION_NS" sysctl -qw net.ipv4.ip_forward=0
	in_ns "$BASTION_NS" ip link set lo up
	if ! ip link show "$ROOT_LINK" >/dev/null 2>&1; then
		ip link add "$ROOT_LINK" type veth peer name eth0 netns "$BASTION_NS"
	fi
	ip addr replace "$ROOT_ADDR/24" dev "$ROOT_LINK"
	ip link set "$ROOT_LINK" up
	# A route to the cluster through the bastion: the nodes are unreachable from here only
	# because the bastion does not forward, which is what `up` checks.
	ip route replace "$NET_CLUSTER.0/24" via "$BASTION_ADDR" dev "$ROOT_LINK"
	in_ns "$BASTION_NS" ip addr replace "$BASTION_ADDR/24" dev eth0
	in_ns "$BASTION_NS" ip link set eth0 up
	in_ns "$BASTION_NS" ip link show br0 >/dev/null 2>&1 || in_ns "$BASTION_NS" ip link add br0 type bridge
	in_ns "$BASTION_NS" ip addr replace "$BASTION_CLUSTER_ADDR/24" dev br0
	in_ns "$BASTION_NS" ip link set br0 up
	each_node make_node_network || die "could not make the nodes' network"
}

make_node_network() { # NODE
	local node=$1 ns port
	ns=$(node_ns "$node")
	port=port${node#node}
	ns_exists "$ns" || ip netns add "$ns"
	if ! ip -n "$BASTION_NS" link show "$port" >/dev/null 2>&1; then
		ip link add "$port" netns "$BASTION_NS" type veth peer name eth0 netns "$ns"
	fi
	ip -n "$BASTION_NS" link set "$port" master br0 up
	ip -n "$ns" -batch - <<EOF2
link set lo up
addr replace $(node_addr "$node")/24 dev eth0
link set eth0 up
route replace $NET_ROOT.0/24 via $BASTION_CLUSTER_ADDR dev eth0
EOF2
}

remove_network() {
	local namespaces
	namespaces=$(ip netns list | awk '{print $1}' | grep -E "^$P-(bastion|node[0-9]+)$" || true)
	# shellcheck disable=SC2086 # one namespace a word
	parallel 32 remove_namespace $namespaces || true
	# Usually gone with the bastion namespace already (the kernel removes both ends of a veth).
	ip link del "$ROOT_LINK" 2>/dev/null || true
}

remove_namespace() { # NS
	local ns=$1 pids
	# Anything still in one of our namespaces was started by us (directly or by a daemon).
	pids=$(ip netns pids "$ns" 2>/dev/null || true)
	if [[ -n $pids ]]; then
		log "killing leftover processes in $ns: ${pids//$'\n'/ }"
		# shellcheck disable=SC2086 # one pid a word
		kill -KILL $pids 2>/dev/null || true
	fi
	ip netns del "$ns"
	rm -rf "/etc/netns/$ns"
}

# --- servers ----------------------------------------------------------------------------------

# Runs inside a node's new mount+UTS namespace (via ip netns exec + unshare): make it the node's own.
node_namespace_main() {
	local node=$1 mp fs opts dir layers
	layers=$(node_layers "$node")
	hostname "$node"
	while read -r mp fs opts; do
		mkdir -p "$mp"
		mount -t "$fs" -o "$opts" "$fs" "$mp"
	done <"$STATE/etc/cgroup-mounts"
	mount -t tmpfs -o mode=755 tmpfs /run
	mkdir -m 755 /run/sshd
	mount --bind "$STATE/$node/tmp" /tmp
	mount --bind "$STATE/$node/home" /root
	if [[ ${RUNTIME[$node]} == containerd ]]; then
		mkdir -m 711 /run/containerd
		mount --bind "$STATE/$node/containerd/run" /run/containerd
	fi
	for dir in $LAYERED_DIRS; do
		[[ -d $layers$dir ]] || continue
		mount -t overlay overlay -o "ro,lowerdir=$layers$dir:$dir" "$dir" || mask_without_overlay "$layers$dir" "$dir"
	done
	exec sleep infinity
}

# Where overlay cannot mount: a program to hide gets /dev/null over it (no longer executable),
# a replacement is bound over the original.
mask_without_overlay() { # LAYER DIR
	local entry
	for entry in "$1"/*; do
		if [[ -c $entry ]]; then mount --bind /dev/null "$2/${entry##*/}"; else mount --bind "$entry" "$2/${entry##*/}"; fi
	done
}

# Runs inside the control daemon's new mount namespace.
control_namespace_main() {
	mount --bind "$STATE/control/hosts" /etc/hosts
	mount --bind "$STATE/control/etc-docker" /etc/docker
	mount -t tmpfs -o mode=755 tmpfs /run
	exec "$@"
}

start_node_namespace() {
	local node=$1
	mkdir -p "$STATE/$node/tmp/releases"
	chmod 1777 "$STATE/$node/tmp"
	make_node_home "$node"
	start_bg "$node-ns" sleep ip netns exec "$(node_ns "$node")" unshare -m -u --propagation private "$SELF" _node-namespace "$node"
	# Ready once the holder has exec'd into `sleep`, which it does after its mounts.
	wait_for "$node namespace" 10 running_pid "$node-ns" || die "$node namespace did not come up: $STATE/log/$node-ns.log"
}

# root's home on a node is its own, with the distribution's stock dotfiles: the machine's own
# ~/.bashrc (which bash sources for every command sshd runs) can be slow — a `pyenv init` there
# added 0.15-0.4 s to each remote command — and no real node carries the operator's dotfiles.
make_node_home() { # NODE
	local home=$STATE/$1/home file
	mkdir -p "$home"
	chmod 700 "$home"
	for file in /etc/skel/.bashrc /etc/skel/.profile; do
		[[ ! -f $file ]] || cp "$file" "$home/"
	done
}

enter_node() { # NODE CMD...: run in the node's network, mount and UTS namespaces
	local node=$1 holder
	shift
	holder=$(running_pid "$node-ns") || die "$node is not up"
	nsenter -t "$holder" -m -u -n -- "$@"
}

# start_node NODE: its namespace, sshd and runtime daemon, without waiting for the servers.
start_node() {
	local node=$1
	if ! running_pid "$node-ns" >/dev/null; then
		# Servers left in a namespace that lost its holder would not be reachable through it.
		stop_bg "$node-sshd"
		stop_bg "$node-$(node_server "$node")"
		write_node_files "$node"
		start_node_namespace "$node"
	fi
	start_node_sshd "$node"
	start_node_server "$node"
}

wait_node() { # NODE
	wait_for "$1 sshd" 10 tcp_open "$(node_addr "$1")" 22 "$BASTION_NS" || die "$1 sshd did not start: $STATE/log/$1-sshd.log"
	wait_node_server "$1"
}

start_node_server() { # NODE
	case ${RUNTIME[$1]} in
	docker) start_node_dockerd "$1" ;;
	containerd) start_node_containerd "$1" ;;
	esac
}

wait_node_server() { # NODE
	# shellcheck disable=SC2046 # the launcher's words
	case ${RUNTIME[$1]} in
	docker) wait_dockerd "$1" "$STATE/$1" $(node_launcher "$1") ;;
	containerd) wait_containerd "$1" ;;
	esac
}

# Each daemon also answers on /run/docker.sock inside its own private /run.
dockerd_args() { # DIR
	local dir=$1
	echo --config-file "$STATE/etc/daemon.json" --data-root "$dir/docker" --exec-root "$dir/exec" \
		--pidfile "$dir/dockerd.pid" -H "unix://$dir/docker.sock" -H unix:///run/docker.sock \
		--bridge=none --iptables=false --ip6tables=false --ip-masq=false \
		--insecure-registry "$REGISTRY" --log-level warn
}

# Its socket first: a client is a big Go program, too costly to run ten times a second per node.
docker_ready() { [[ -S $1 ]] && "$DOCKER" -H "unix://$1" version; }

# start_dockerd NAME DIR LAUNCHER...: overlay2, or vfs where overlay2 cannot mount here.
start_dockerd() {
	local name=$1 dir=$2 driver
	shift 2
	running_pid "$name-dockerd" >/dev/null && return 0
	mkdir -p "$dir"
	driver=$(cat "$dir/storage-driver" 2>/dev/null || echo overlay2)
	# Pid files of a daemon (and its containerd) that died with the machine name a stranger now.
	rm -rf "$dir/dockerd.pid" "$dir/exec"
	# shellcheck disable=SC2046
	start_bg "$name-dockerd" "$DOCKERD" "$@" "$DOCKERD" $(dockerd_args "$dir") --storage-driver "$driver"
}

wait_dockerd() { # NAME DIR LAUNCHER...
	local name=$1 dir=$2
	if ! wait_for "$name dockerd" 30 docker_ready "$dir/docker.sock"; then
		if [[ ! -e $dir/storage-driver ]] && grep -qE 'overlay|graphdriver' "$STATE/log/$name-dockerd.log"; then
			log "overlay2 does not work for $name here: falling back to vfs (slower, more disk)"
			stop_bg "$name-dockerd"
			echo vfs >"$dir/storage-driver"
			start_dockerd "$@"
			wait_for "$name dockerd" 30 docker_ready "$dir/docker.sock" && return 0
		fi
		die "$name dockerd did not start: see $STATE/log/$name-dockerd.log"
	fi
}

node_launcher() { echo nsenter -t "$(running_pid "$1-ns")" -m -u -n --; }

start_node_sshd() {
	running_pid "$1-sshd" >/dev/null && return 0
	# shellcheck disable=SC2046
	start_bg "$1-sshd" "$SSHD" $(node_launcher "$1") "$SSHD" -D -f "$STATE/etc/$1.sshd_config" -E "$STATE/log/$1-sshd.log"
}

start_node_dockerd() {
	# shellcheck disable=SC2046
	start_dockerd "$1" "$STATE/$1" $(node_launcher "$1")
}

# containerd reads the node's /etc/containerd/config.toml, its default, as on a Kubespray node.
start_node_containerd() {
	running_pid "$1-containerd" >/dev/null && return 0
	rm -f "$(containerd_address "$1")" # a stale socket would make each readiness probe wait
	# shellcheck disable=SC2046
	start_bg "$1-containerd" "$CONTAINERD" $(node_launcher "$1") "$CONTAINERD" --log-level warn
}

containerd_ready() { [[ -S $1 ]] && "$CTR" --address "$1" version; }

# Ready when it answers and its CRI plugin loaded (it fails alone: containerd runs on without it).
wait_containerd() { # NODE
	local address
	address=$(containerd_address "$1")
	wait_for "$1 containerd" 30 containerd_ready "$address" || die "$1 containerd did not start: see $STATE/log/$1-containerd.log"
	"$CTR" --address "$address" plugins ls | awk '$2 == "cri" && $NF == "ok" { ok = 1 } END { exit !ok }' ||
		die "$1 containerd runs without its CRI plugin: see $STATE/log/$1-containerd.log"
}

start_control_dockerd() {
	start_dockerd control "$STATE/control" unshare -m --propagation private "$SELF" _control-namespace
}

start_bastion() {
	start_bastion_sshd
	local registry
	for registry in registry secure-registry; do
		running_pid "$registry" >/dev/null ||
			start_bg "$registry" docker-registry ip netns exec "$BASTION_NS" docker-registry serve "$STATE/etc/$registry.yml"
	done
}

# Up while the registry runs: failure tests stop the bastion's sshd, never the registry, and
# the instance is still up (and `env` still answers) meanwhile.
is_up() { running_pid registry >/dev/null; }

start_bastion_sshd() {
	[[ -d /run/sshd ]] || mkdir -m 755 /run/sshd # privilege separation (the bastion shares our /run)
	running_pid bastion-sshd >/dev/null ||
		start_bg bastion-sshd "$SSHD" ip netns exec "$BASTION_NS" "$SSHD" -D -f "$STATE/etc/bastion.sshd_config" -E "$STATE/log/bastion-sshd.log"
}

tcp_open() { # ADDR PORT [NS]
	if [[ -n ${3:-} ]]; then
		ip netns exec "$3" timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2"
	else
		timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2"
	fi
}

# --- inventory --------------------------------------------------------------------------------

write_inventory() {
	local node common
	mkdir -p "$INVENTORY_DIR"
	common="-o UserKnownHostsFile=$STATE/keys/known_hosts -o StrictHostKeyChecking=yes"
	{
		echo "# The dropship test bed, instance $ID: written by scripts/testbed.sh up. Do not edit."
		echo "[all]"
		for node in $(node_names); do echo "$node ansible_host=$(node_addr "$node") container_manager=${RUNTIME[$node]}"; done
		echo
		echo "[bastion]"
		echo "bastion ansible_host=$BASTION_ADDR ansible_user=root"
		echo
		echo "[kube_control_plane]"
		echo "node1"
		echo
		echo "[etcd]"
		echo "node1"
		echo
		echo "[kube_node]"
		node_names
		echo
		echo "[k8s_cluster:children]"
		echo "kube_control_plane"
		echo "kube_node"
		echo
		echo "[all:vars]"
		echo "ansible_user=root"
		echo "ansible_ssh_private_key_file=$STATE/keys/id_ed25519"
		echo "ansible_ssh_common_args='$common'"
	} >"$INVENTORY_DIR/hosts.ini"
	{
		echo "# The dropship test bed, instance $ID: written by scripts/testbed.sh up. Do not edit."
		echo "all:"
		echo "  vars:"
		echo "    ansible_user: root"
		echo "    ansible_ssh_private_key_file: $STATE/keys/id_ed25519"
		echo "    ansible_ssh_common_args: '$common'"
		echo "  hosts:"
		for node in $(node_names); do
			echo "    $node:"
			echo "      ansible_host: $(node_addr "$node")"
			echo "      container_manager: ${RUNTIME[$node]}"
		done
		echo "  children:"
		echo "    bastion:"
		echo "      hosts:"
		echo "        bastion:"
		echo "          ansible_host: $BASTION_ADDR"
		echo "          ansible_user: root"
		echo "    etcd:"
		echo "      hosts:"
		echo "        node1:"
		echo "    k8s_cluster:"
		echo "      children:"
		echo "        kube_control_plane:"
		echo "          hosts:"
		echo "            node1:"
		echo "        kube_node:"
		echo "          hosts:"
		for node in $(node_names); do echo "            $node:"; done
	} >"$INVENTORY_DIR/hosts.yaml"
	# The registries' names resolve only inside the test bed; the machine running dropship (and
	# anything else outside) reaches them by address: declared as their mirrors, the way a
	# Kubespray inventory declares mirrors, with the secure one's test CA.
	mkdir -p "$INVENTORY_DIR/group_vars"
	cat >"$INVENTORY_DIR/group_vars/all.yml" <<EOF
# The dropship test bed, instance $ID: written by scripts/testbed.sh up. Do not edit.
containerd_registries_mirrors:
  - prefix: $REGISTRY
    mirrors:
      - host: http://$BASTION_ADDR:5000
        capabilities: [pull, resolve]
  - prefix: $SECURE_REGISTRY
    mirrors:
      - host: https://$BASTION_ADDR:5443
        capabilities: [pull, resolve]
dropship_registry_ca_files:
  - $STATE/keys/secure-ca.crt
EOF
	"$REPO/scripts/testbed-images.sh" list >"$INVENTORY_DIR/images.txt"
}

# --- checks -----------------------------------------------------------------------------------

ssh_jump() { # NODE CMD...
	local node=$1
	shift
	ssh -F "$STATE/keys/ssh_config" -J "root@$BASTION_ADDR" "root@$(node_addr "$node")" "$@"
}

# No node answers from the root namespace; every node's sshd answers through the bastion (its
# banner, read through one bastion connection: a channel each, as dropship's jumps do, where one
# connection per node would meet the bastion's MaxStartups), and a full login (keys, known_hosts)
# works on one node of each kind: each runtime, node2 (RSA host key), the last (Flatcar by default).
check_isolation() {
	[[ $(in_ns "$BASTION_NS" sysctl -n net.ipv4.ip_forward) == 0 ]] || die "the bastion forwards IP"
	# shellcheck disable=SC2046 # one node a word
	parallel 64 unreachable $(node_names) || die "a node is reachable directly from the root namespace"
	local mux=$STATE/run/bastion.mux ok=0
	rm -f "$mux"
	start_bg bastion-mux ssh ssh -F "$STATE/keys/ssh_config" -M -S "$mux" -N "root@$BASTION_ADDR"
	wait_for "bastion connection" 10 ssh -F "$STATE/keys/ssh_config" -S "$mux" -O check "root@$BASTION_ADDR" || die "cannot ssh to the bastion"
	export MUX=$mux
	# shellcheck disable=SC2046
	parallel 16 sshd_banner_through_mux $(node_names) || ok=1
	# shellcheck disable=SC2046
	parallel 8 login_through_mux $(one_node_of_each_kind) || ok=1
	stop_bg bastion-mux
	((ok == 0)) || die "a node is not reachable with ssh through the bastion"
	log "isolation checked: no node reachable directly, every node reachable through the bastion"
}

unreachable() { ! tcp_open "$(node_addr "$1")" 22 || { log "$1 ($(node_addr "$1")) answers from the root namespace: $(ip route get "$(node_addr "$1")" | head -1)"; return 1; }; }

sshd_banner_through_mux() { # NODE (MUX: the bastion connection's control socket)
	local banner
	banner=$(ssh -F "$STATE/keys/ssh_config" -S "$MUX" -W "$(node_addr "$1"):22" "root@$BASTION_ADDR" </dev/null | head -c 8)
	[[ $banner == SSH-2.0- ]] || { log "$1: no sshd banner through the bastion"; return 1; }
}

login_through_mux() { # NODE
	ssh -F "$STATE/keys/ssh_config" -o "ProxyCommand=ssh -F $STATE/keys/ssh_config -S $MUX -W %h:%p root@$BASTION_ADDR" \
		"root@$(node_addr "$1")" true
}

one_node_of_each_kind() {
	{
		for runtime in docker containerd crio; do nodes_running "$runtime" | head -n 1; done
		(($(node_count) < 2)) || echo node2
		echo "node$(node_count)"
	} | sort -u
}

# --- commands ---------------------------------------------------------------------------------

cmd_up() {
	local n=${1:-5} node
	if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > 240)); then die "N must be 1..240, got '$n'"; fi
	(($(id -u) == 0)) || die "run as root (namespaces, mounts)"
	local tool
	for tool in ip nsenter unshare ssh ssh-keygen docker-registry curl openssl htpasswd sudo "$SSHD" "$DOCKERD" "$DOCKER" "$CONTAINERD" "$CTR" runc podman skopeo; do
		command -v "$tool" >/dev/null || die "$tool is missing: run scripts/install-deps.sh"
	done
	local started_at=$SECONDS
	mkdir -p "$STATE"/{run,log,etc,registry}
	record_layout "$n"
	make_keys
	make_secure_registry_keys
	write_sshd_config bastion yes
	for node in $(node_names); do write_sshd_config "$node" no; done
	write_known_hosts
	write_control_files
	write_daemon_files
	make_network
	start_bastion
	start_control_dockerd
	each_node start_node || die "a node did not start (see above)"
	wait_for "registry" 20 curl -sf "http://$BASTION_ADDR:5000/v2/" || die "registry did not start: $STATE/log/registry.log"
	wait_for "secure registry" 20 curl -s -o /dev/null --cacert "$STATE/keys/secure-ca.crt" "https://$BASTION_ADDR:5443/v2/" ||
		die "secure registry did not start: $STATE/log/secure-registry.log"
	wait_for "bastion sshd" 10 tcp_open "$BASTION_ADDR" 22 || die "bastion sshd did not start: $STATE/log/bastion-sshd.log"
	each_node wait_node || die "a node's servers did not start (see above)"
	wait_dockerd control "$STATE/control" unshare -m --propagation private "$SELF" _control-namespace
	check_isolation
	write_inventory
	(
		set -a
		eval "$(cmd_env)"
		"$REPO/scripts/testbed-images.sh" ensure
	)
	log "up: $n nodes in $((SECONDS - started_at)) s; inventory $INVENTORY_DIR/hosts.ini; eval \"\$(TESTBED_ID=$ID scripts/testbed.sh env)\""
}

cmd_down() {
	local purge=${1:-}
	[[ -z $purge || $purge == --purge ]] || die "down takes only --purge"
	if [[ -d $STATE/run ]]; then
		# The runtime daemons first (dockerd stops its containerd), then the rest, then the namespaces.
		# shellcheck disable=SC2046 # one name a word
		stop_bg $(started '*-dockerd' '*-containerd')
		# shellcheck disable=SC2046
		stop_bg $(started '*')
	fi
	remove_network
	# Nodes come up empty next time; keys, registry data and the control daemon stay.
	rm -rf "$STATE"/node* "$STATE/etc/layers"
	[[ $purge != --purge ]] || rm -rf "$STATE" "$INVENTORY_DIR"
	log "down"
}

cmd_status() {
	local name pid ok=0 node line
	[[ -s $STATE/nodes ]] || { echo "instance $ID: never brought up"; return 1; }
	echo "instance $ID: $(node_count) nodes, state $STATE, inventory $INVENTORY_DIR"
	for name in registry secure-registry bastion-sshd control-dockerd; do
		if pid=$(running_pid "$name"); then echo "  $name: running (pid $pid)"; else echo "  $name: stopped"; ok=1; fi
	done
	for node in $(node_names); do
		line="  $node (${RUNTIME[$node]}, $(node_arch "$node")${DISCARD[$node]:+, discard_unpacked_layers}):"
		for name in ns sshd $(node_server "$node"); do
			if pid=$(running_pid "$node-$name"); then line+=" $name $pid"; else line+=" $name STOPPED"; ok=1; fi
		done
		echo "$line"
	done
	echo "  memory: $(memory_use '*')"
	echo "  memory of the nodes: $(memory_use 'node*' "$(node_count)")"
	echo "  disk: $(du -sxm "$STATE" | cut -f1) MB in $STATE"
	return $ok
}

# memory_use GLOB [PER]: the resident memory of the processes we started whose names match GLOB,
# and of their descendants (dockerd's containerd); PER: also per one of PER (nodes).
memory_use() {
	local roots=() name pid
	for name in $(started "$1"); do
		pid=$(running_pid "$name") && roots+=("$pid")
	done
	ps -e -o pid=,ppid=,rss= | awk -v roots="${roots[*]}" -v per="${2:-0}" '
		BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) ours[r[i]] = 1 }
		{ parent[$1] = $2; rss[$1] = $3 }
		END { for (p in rss) { q = p; while (q > 1 && !(q in ours)) q = parent[q]
		                       if (!(q in ours)) continue
		                       total += rss[p]; count++; pss = 0
		                       file = "/proc/" p "/smaps_rollup"
		                       while ((getline line < file) > 0) if (line ~ /^Pss:/) { split(line, f, " "); pss = f[2] }
		                       close(file); shared += pss }
		      printf "%d MB RSS (%d MB PSS) in %d processes", total / 1024, shared / 1024, count
		      if (per > 0) printf "; per node %.1f MB RSS, %.1f MB PSS", total / 1024 / per, shared / 1024 / per
		      printf "\n" }'
}

cmd_env() {
	if ! is_up || [[ ! -s $INVENTORY_DIR/hosts.ini ]]; then
		log "instance $ID is not up: run scripts/testbed.sh up"
		return 1
	fi
	local node i images
	images=$(tr '\n' ' ' <"$INVENTORY_DIR/images.txt" | sed 's/ $//')
	kv() { echo "$1='$2'"; }
	words() { tr '\n' ' ' | sed 's/ $//'; }
	kv TESTBED_ID "$ID"
	kv TESTBED_STATE "$STATE"
	kv TESTBED_INVENTORY "$INVENTORY_DIR/hosts.ini"
	kv TESTBED_INVENTORY_YAML "$INVENTORY_DIR/hosts.yaml"
	kv TESTBED_KEY "$STATE/keys/id_ed25519"
	kv TESTBED_KNOWN_HOSTS "$STATE/keys/known_hosts"
	kv TESTBED_SSH_CONFIG "$STATE/keys/ssh_config"
	kv TESTBED_BASTION "$BASTION_ADDR"
	kv TESTBED_REGISTRY "$REGISTRY"
	kv TESTBED_REGISTRY_URL "http://$BASTION_ADDR:5000"
	kv TESTBED_IMAGES "$images"
	kv TESTBED_IMAGES_FILE "$INVENTORY_DIR/images.txt"
	kv TESTBED_MULTIARCH_IMAGE "$("$REPO/scripts/testbed-images.sh" list multiarch)"
	kv TESTBED_SECURE_REGISTRY "$SECURE_REGISTRY"
	kv TESTBED_SECURE_URL "https://$BASTION_ADDR:5443"
	kv TESTBED_SECURE_CA "$STATE/keys/secure-ca.crt"
	kv TESTBED_SECURE_USER "$SECURE_USER"
	kv TESTBED_SECURE_PASSWORD "$(cat "$STATE/keys/secure.password")"
	kv TESTBED_PRIVATE_IMAGE "$(TESTBED_SECURE_REGISTRY=$SECURE_REGISTRY "$REPO/scripts/testbed-images.sh" list private)"
	kv TESTBED_CONTROL_DOCKER_HOST "unix://$(control_socket)"
	kv TESTBED_NODES "$(node_names | words)"
	kv TESTBED_DOCKER_NODES "$(nodes_running docker | words)"
	kv TESTBED_CONTAINERD_NODES "$(nodes_running containerd | words)"
	kv TESTBED_CRIO_NODES "$(nodes_running crio | words)"
	kv TESTBED_AARCH64_NODES "$(cat "$STATE/aarch64-nodes")"
	kv TESTBED_DISCARD_NODES "$(cat "$STATE/discard-nodes")"
	kv TESTBED_FLATCAR_NODES "$(cat "$STATE/flatcar-nodes" 2>/dev/null || echo "node$NODE_COUNT")"
	# One of them (the last), for tests written when there was only one.
	kv TESTBED_FLATCAR_NODE "$(printf '%s\n' "${!FLATCAR[@]}" | sort -V | tail -n 1)"
	local snapshotter etc
	snapshotter=$(cat "$STATE/etc/snapshotter")
	for ((i = 1; i <= NODE_COUNT; i++)); do # no subshell for each of a hundred nodes
		node=node$i etc=/etc/netns/$P-node$i
		kv "TESTBED_NODE${i}_ADDR" "$NET_CLUSTER.$((10 + i))"
		kv "TESTBED_NODE${i}_NETNS" "$P-$node"
		kv "TESTBED_NODE${i}_RUNTIME" "${RUNTIME[$node]}"
		if [[ -n ${AARCH64[$node]:-} ]]; then kv "TESTBED_NODE${i}_ARCH" aarch64; else kv "TESTBED_NODE${i}_ARCH" x86_64; fi
		case ${RUNTIME[$node]} in
		docker) kv "TESTBED_NODE${i}_DOCKER_HOST" "unix://$STATE/$node/docker.sock" ;;
		containerd)
			kv "TESTBED_NODE${i}_CONTAINERD_ADDRESS" "$STATE/$node/containerd/run/containerd.sock"
			kv "TESTBED_NODE${i}_CONTAINERD_CONFIG" "$etc/containerd/config.toml"
			kv "TESTBED_NODE${i}_CONTAINERD_SNAPSHOTTER" "$snapshotter"
			if [[ -n ${DISCARD[$node]:-} ]]; then kv "TESTBED_NODE${i}_DISCARD_UNPACKED_LAYERS" true; else kv "TESTBED_NODE${i}_DISCARD_UNPACKED_LAYERS" false; fi
			;;
		crio)
			kv "TESTBED_NODE${i}_CONTAINERS_STORAGE_CONF" "$etc/containers/storage.conf"
			kv "TESTBED_NODE${i}_CONTAINERS_CONF" "$etc/containers/containers.conf"
			kv "TESTBED_NODE${i}_CONTAINERS_REGISTRIES_CONF" "$etc/containers/registries.conf"
			;;
		esac
	done
}

cmd_ssh() {
	local host=${1:?usage: ssh HOST [CMD...]}
	shift
	if [[ $host == bastion ]]; then
		ssh -F "$STATE/keys/ssh_config" "root@$BASTION_ADDR" "$@"
	else
		ssh_jump "$host" "$@"
	fi
}

cmd_exec() {
	local host=${1:?usage: exec HOST CMD...}
	shift
	if [[ $host == bastion ]]; then in_ns "$BASTION_NS" "$@"; else enter_node "$host" "$@"; fi
}

cmd_start_stop() { # start|stop HOST SERVER
	local action=$1 node=${2:?usage: start|stop HOST SERVER} server=${3:?usage: start|stop HOST SERVER}
	if [[ $node == bastion ]]; then
		bastion_start_stop "$action" "$server"
		return
	fi
	if ! [[ $node =~ ^node[0-9]+$ ]] || ((${node#node} > $(node_count))); then die "no such node: $node"; fi
	local daemon
	daemon=$(node_server "$node")
	[[ $server == sshd || $server == "$daemon" ]] || die "$node (${RUNTIME[$node]}) runs no '$server', only sshd${daemon:+ and $daemon}"
	case "$action-$server" in
	stop-*) stop_bg "$node-$server" ;;
	start-sshd)
		start_node_sshd "$node"
		wait_for "$node sshd" 10 tcp_open "$(node_addr "$node")" 22 "$BASTION_NS" || die "$node sshd did not start"
		;;
	start-*)
		start_node_server "$node"
		wait_node_server "$node"
		;;
	esac
}

bastion_start_stop() { # start|stop sshd: the bastion's registries stay up
	case "$1-$2" in
	stop-sshd) stop_bg bastion-sshd ;;
	start-sshd)
		start_bastion_sshd
		wait_for "bastion sshd" 10 tcp_open "$BASTION_ADDR" 22 || die "bastion sshd did not start: $STATE/log/bastion-sshd.log"
		;;
	*) die "the bastion runs no '$2' (only sshd)" ;;
	esac
}

# The CRI client is Python (grpcio): no crictl in Debian. Its stubs are generated from
# scripts/cri/api.proto into the venv, once per version of that file.
cmd_cri_images() {
	local node=${1:?usage: cri-images NODE}
	[[ ${RUNTIME[$node]:-} == containerd ]] || die "$node is not a containerd node (the CRI image service is containerd's)"
	"$VENV/bin/python" "$REPO/scripts/cri/list-images.py" "$(cri_stubs)" "unix://$(containerd_address "$node")"
}

cri_stubs() {
	local proto=$REPO/scripts/cri/api.proto out tmp
	[[ -x $VENV/bin/python ]] || die "no $VENV: run scripts/install-deps.sh"
	out=$VENV/lib/dropship-cri-$(sha256sum "$proto" | cut -c1-12)
	if [[ ! -s $out/api_pb2_grpc.py ]]; then
		tmp=$(mktemp -d "$out.XXXXXX")
		"$VENV/bin/python" -m grpc_tools.protoc -I "${proto%/*}" --python_out="$tmp" --grpc_python_out="$tmp" "$proto" >&2 ||
			die "could not compile $proto (grpcio-tools missing? run scripts/install-deps.sh)"
		mv -T "$tmp" "$out" 2>/dev/null || rm -rf "$tmp" # another run made it meanwhile
	fi
	echo "$out"
}

case "${1:-}" in
up) shift; cmd_up "$@" ;;
down) shift; cmd_down "$@" ;;
status) cmd_status ;;
env) cmd_env ;;
ssh) shift; cmd_ssh "$@" ;;
exec) shift; cmd_exec "$@" ;;
start | stop) cmd_start_stop "$@" ;;
cri-images) shift; cmd_cri_images "$@" ;;
_node-namespace) node_namespace_main "$2" ;;
_control-namespace) shift; control_namespace_main "$@" ;;
*) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
