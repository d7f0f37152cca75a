#!/usr/bin/env bash
# The dropship test bed: a bastion and N nodes in network namespaces on this machine, each with
# a real sshd, each node with a real dockerd, a registry holding test images, and a "control"
# dockerd in the root namespace (the localhost download delegate).
#
#   scripts/testbed.sh up [N]        bring instance $TESTBED_ID (default 0) up with N nodes (default 4)
#   scripts/testbed.sh down [--purge] stop what `up` started, remove namespaces and links
#                                     (--purge also deletes keys, registry data and the inventory)
#   scripts/testbed.sh status        say what runs
#   scripts/testbed.sh env           print shell variables a test needs (eval "$(... env)")
#   scripts/testbed.sh ssh HOST [CMD...]        ssh -J through the bastion, as root
#   scripts/testbed.sh exec HOST CMD...         run CMD inside HOST's namespaces (no SSH)
#   scripts/testbed.sh start|stop HOST sshd|dockerd   start or stop one server (failure tests)
#
# Layout of instance n (0 <= n <= 127), everything derived from TESTBED_ID:
#   namespaces   ds<n>-bastion, ds<n>-node1..N; root end of the bastion link: ds<n>-root
#   addresses    root 198.18.(2n).1 <-> bastion 198.18.(2n).2; cluster 198.18.(2n+1).0/24 on a
#                bridge in the bastion (bastion .1, node i .(10+i)). The bastion does not forward.
#   state        /var/lib/dropship-testbed/<n> (keys, configs, pid files, logs, docker data)
#   inventory    <repo>/inventory/testbed/ (n=0) or <repo>/inventory/testbed-<n>/
#   registry     registry.testbed:5000, served in the bastion; every daemon resolves that name to
#                the bastion address it can reach (hosts files in private mount namespaces).
# Each node's sshd and dockerd share one private mount (and UTS) namespace, held open by a
# `sleep` process: there /tmp and /run are the node's own, /run/docker.sock is its daemon (so
# `docker` and `sudo docker` over SSH need no variables), /usr/local/bin/docker is Debian's client.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$REPO/scripts/testbed.sh"
ID=${TESTBED_ID:-0}
if ! [[ $ID =~ ^[0-9]+$ ]] || ((ID > 127)); then echo "testbed: TESTBED_ID must be 0..127, got '$ID'" >&2; exit 2; fi
export TESTBED_ID=$ID

P="ds$ID"
STATE=/var/lib/dropship-testbed/$ID
NET_ROOT=198.18.$((2 * ID))
NET_CLUSTER=198.18.$((2 * ID + 1))
ROOT_ADDR=$NET_ROOT.1
BASTION_ADDR=$NET_ROOT.2
BASTION_CLUSTER_ADDR=$NET_CLUSTER.1
REGISTRY_NAME=registry.testbed
REGISTRY=$REGISTRY_NAME:5000
ROOT_LINK=$P-root
BASTION_NS=$P-bastion
if ((ID == 0)); then INVENTORY_DIR=$REPO/inventory/testbed; else INVENTORY_DIR=$REPO/inventory/testbed-$ID; fi
DOCKERD=/usr/sbin/dockerd
[[ -x $DOCKERD ]] || DOCKERD=/usr/bin/dockerd
DOCKER=/usr/bin/docker
SSHD=/usr/sbin/sshd

log() { echo "testbed[$ID]: $*" >&2; }
die() { log "error: $*"; exit 1; }

node_ns() { echo "$P-$1"; }
node_addr() { echo "$NET_CLUSTER.$((10 + ${1#node}))"; }
node_count() { cat "$STATE/nodes" 2>/dev/null || echo 0; }
node_names() { local i; for ((i = 1; i <= $(node_count); i++)); do echo "node$i"; done; }
control_socket() { echo "$STATE/control/docker.sock"; }
node_socket() { echo "$STATE/$1/docker.sock"; }

# --- processes: every one we start has a pid file under $STATE/run --------------------------

pidfile() { echo "$STATE/run/$1.pid"; }

started() { # GLOB: the names of the pid files matching GLOB
	local file
	for file in "$STATE/run"/$1.pid; do [[ ! -e $file ]] || basename "$file" .pid; done
}

# A zombie counts as gone: our daemons are orphans, reaped by init whenever it gets to it.
alive() { [[ -r /proc/$1/stat && "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]]; }

# The pid in a pid file, if that process still runs the program we started.
running_pid() {
	local file pid exe
	file=$(pidfile "$1")
	[[ -s $file ]] || return 1
	read -r pid exe <"$file"
	alive "$pid" && [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$exe" ]] && echo "$pid"
}

# start NAME PROGRAM [ARGS...]: run in the background, output to $STATE/log/NAME.log.
# PROGRAM is what the process finally execs into (the wrappers before it exec, never fork).
start_bg() {
	local name=$1 exe
	shift
	exe=$(readlink -f "$(command -v "$1")")
	shift
	setsid "$@" </dev/null >>"$STATE/log/$name.log" 2>&1 &
	echo "$! $exe" >"$(pidfile "$name")"
}

stop_bg() {
	local name=$1 pid i
	pid=$(running_pid "$name") || { rm -f "$(pidfile "$name")"; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 150; i++)); do
		alive "$pid" || break
		sleep 0.1
	done
	if alive "$pid"; then
		log "$name (pid $pid) did not stop in 15 s: killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$(pidfile "$name")"
}

# wait_for WHAT SECONDS COMMAND...: poll until COMMAND succeeds.
wait_for() {
	local what=$1 deadline=$((SECONDS + $2))
	shift 2
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || return 1
		sleep 0.1
	done
	log "$what ready"
}

# --- keys, configs ----------------------------------------------------------------------------

make_key() { # FILE TYPE COMMENT
	[[ -s $1 ]] || ssh-keygen -q -t "$2" -N '' -C "$3" -f "$1"
}

make_keys() {
	mkdir -p "$STATE/keys"
	make_key "$STATE/keys/id_ed25519" ed25519 "dropship-testbed-$ID client"
	cp "$STATE/keys/id_ed25519.pub" "$STATE/keys/authorized_keys"
	local host
	for host in bastion $(node_names); do
		make_key "$STATE/keys/${host}_ed25519" ed25519 "testbed$ID-$host"
	done
	# node2 also has an RSA host key, and known_hosts records only that one for node2: a client
	# must negotiate rsa-sha2-* (the host key algorithm order pitfall).
	(($(node_count) < 2)) || make_key "$STATE/keys/node2_rsa" rsa "testbed$ID-node2"
}

host_key_files() { # HOST: the host keys its sshd offers
	echo "$STATE/keys/${1}_ed25519"
	[[ ! -s $STATE/keys/${1}_rsa ]] || echo "$STATE/keys/${1}_rsa"
}

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
	cat >"$STATE/keys/ssh_config" <<EOF
Host *
  User root
  IdentityFile $STATE/keys/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $STATE/keys/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 5
EOF
}

write_hosts_files() {
	mkdir -p "$STATE/control" "/etc/netns/$BASTION_NS"
	{ cat /etc/hosts; echo "$BASTION_ADDR $REGISTRY_NAME"; } >"$STATE/control/hosts"
	local node ns last
	last=node$(node_count)
	for node in $(node_names); do
		ns=$(node_ns "$node")
		mkdir -p "/etc/netns/$ns"
		{ cat /etc/hosts; echo "127.0.1.1 $node"; echo "$BASTION_CLUSTER_ADDR $REGISTRY_NAME"; } >"/etc/netns/$ns/hosts"
		echo "$node" >"/etc/netns/$ns/hostname"
		if [[ $node == "$last" ]]; then
			# Read through the /etc/os-release symlink, this file is what `cat /etc/os-release` shows.
			cat >"/etc/netns/$ns/os-release" <<'EOF'
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
EOF
		fi
	done
}

write_daemon_files() {
	echo '{}' >"$STATE/etc/daemon.json" # so a host's /etc/docker/daemon.json never applies
	cat >"$STATE/etc/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $STATE/registry
  delete:
    enabled: true
http:
  addr: :5000
  secret: dropship-testbed-$ID
EOF
	# The cgroup mounts of the root namespace, replayed in each node's mount namespace (ip netns
	# exec mounts a fresh /sys, and dockerd refuses to start without the cgroup hierarchies).
	awk '{ for (i = 7; $i != "-"; i++); mp = $5; fs = $(i + 1); opts = $(i + 3)
	       if (mp !~ "^/sys/fs/cgroup") next
	       if (fs == "tmpfs") opts = "mode=755"
	       else if (fs == "cgroup2") opts = "rw"
	       else { gsub(/(^|,)r[wo](,|$)/, ",", opts); gsub(/^,+|,+$/, "", opts)
	              if (opts ~ /^name=[^,]*$/) opts = "none," opts }
	       print mp, fs, opts }' /proc/self/mountinfo >"$STATE/etc/cgroup-mounts"
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
	local node ns port
	for node in $(node_names); do
		ns=$(node_ns "$node")
		port=port${node#node}
		ns_exists "$ns" || ip netns add "$ns"
		in_ns "$ns" ip link set lo up
		if ! in_ns "$BASTION_NS" ip link show "$port" >/dev/null 2>&1; then
			ip link add "$port" netns "$BASTION_NS" type veth peer name eth0 netns "$ns"
		fi
		in_ns "$BASTION_NS" ip link set "$port" master br0 up
		in_ns "$ns" ip addr replace "$(node_addr "$node")/24" dev eth0
		in_ns "$ns" ip link set eth0 up
		in_ns "$ns" ip route replace "$NET_ROOT.0/24" via "$BASTION_CLUSTER_ADDR" dev eth0
	done
}

remove_network() {
	local ns
	for ns in $(ip netns list | awk '{print $1}' | grep -E "^$P-(bastion|node[0-9]+)$" || true); do
		# Anything still in one of our namespaces was started by us (directly or by a daemon).
		local pids
		pids=$(ip netns pids "$ns" 2>/dev/null || true)
		if [[ -n $pids ]]; then
			log "killing leftover processes in $ns: $pids"
			# shellcheck disable=SC2086 # one pid a word
			kill -KILL $pids 2>/dev/null || true
		fi
		ip netns del "$ns"
		rm -rf "/etc/netns/$ns"
	done
	# Usually gone with the bastion namespace already (the kernel removes both ends of a veth).
	ip link del "$ROOT_LINK" 2>/dev/null || true
}

# --- servers ----------------------------------------------------------------------------------

# Runs inside a node's new mount+UTS namespace (via ip netns exec + unshare): make it the node's own.
node_namespace_main() {
	local node=$1 mp fs opts
	hostname "$node"
	while read -r mp fs opts; do
		mkdir -p "$mp"
		mount -t "$fs" -o "$opts" "$fs" "$mp"
	done <"$STATE/etc/cgroup-mounts"
	mount -t tmpfs -o mode=755 tmpfs /run
	mkdir -m 755 /run/sshd
	mount --bind "$STATE/$node/tmp" /tmp
	[[ ! -e /usr/local/bin/docker ]] || mount --bind "$DOCKER" /usr/local/bin/docker
	exec sleep infinity
}

# Runs inside the control daemon's new mount namespace.
control_namespace_main() {
	mount --bind "$STATE/control/hosts" /etc/hosts
	mount -t tmpfs -o mode=755 tmpfs /run
	exec "$@"
}

start_node_namespace() {
	local node=$1
	running_pid "$node-ns" >/dev/null && return 0
	# Servers left in a namespace that lost its holder would not be reachable through it.
	stop_bg "$node-sshd"
	stop_bg "$node-dockerd"
	mkdir -p "$STATE/$node/tmp/releases"
	chmod 1777 "$STATE/$node/tmp"
	start_bg "$node-ns" sleep ip netns exec "$(node_ns "$node")" unshare -m -u --propagation private "$SELF" _node-namespace "$node"
	# Ready once the holder has exec'd into `sleep`, which it does after its mounts.
	wait_for "$node namespace" 10 running_pid "$node-ns" || die "$node namespace did not come up: $STATE/log/$node-ns.log"
}

enter_node() { # NODE CMD...: run in the node's network, mount and UTS namespaces
	local node=$1 holder
	shift
	holder=$(running_pid "$node-ns") || die "$node is not up"
	nsenter -t "$holder" -m -u -n -- "$@"
}

# Each daemon also answers on /run/docker.sock inside its own private /run.
dockerd_args() { # DIR
	local dir=$1
	echo --config-file "$STATE/etc/daemon.json" --data-root "$dir/docker" --exec-root "$dir/exec" \
		--pidfile "$dir/dockerd.pid" -H "unix://$dir/docker.sock" -H unix:///run/docker.sock \
		--bridge=none --iptables=false --ip6tables=false --ip-masq=false \
		--insecure-registry "$REGISTRY" --log-level warn
}

docker_ready() { "$DOCKER" -H "unix://$1" version; }

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

start_node_sshd() {
	running_pid "$1-sshd" >/dev/null && return 0
	start_bg "$1-sshd" "$SSHD" nsenter -t "$(running_pid "$1-ns")" -m -u -n -- "$SSHD" -D -f "$STATE/etc/$1.sshd_config" -E "$STATE/log/$1-sshd.log"
}

start_node_dockerd() {
	# shellcheck disable=SC2046
	start_dockerd "$1" "$STATE/$1" $(node_dockerd_launcher "$1")
}

node_dockerd_launcher() { echo nsenter -t "$(running_pid "$1-ns")" -m -u -n --; }

start_control_dockerd() {
	start_dockerd control "$STATE/control" unshare -m --propagation private "$SELF" _control-namespace
}

start_bastion() {
	[[ -d /run/sshd ]] || mkdir -m 755 /run/sshd # privilege separation (the bastion shares our /run)
	running_pid bastion-sshd >/dev/null ||
		start_bg bastion-sshd "$SSHD" ip netns exec "$BASTION_NS" "$SSHD" -D -f "$STATE/etc/bastion.sshd_config" -E "$STATE/log/bastion-sshd.log"
	running_pid registry >/dev/null ||
		start_bg registry docker-registry ip netns exec "$BASTION_NS" docker-registry serve "$STATE/etc/registry.yml"
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
		for node in $(node_names); do echo "$node ansible_host=$(node_addr "$node")"; done
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
	"$REPO/scripts/testbed-images.sh" list >"$INVENTORY_DIR/images.txt"
}

# --- checks -----------------------------------------------------------------------------------

ssh_jump() { # NODE CMD...
	local node=$1
	shift
	ssh -F "$STATE/keys/ssh_config" -J "root@$BASTION_ADDR" "root@$(node_addr "$node")" "$@"
}

check_isolation() {
	[[ $(in_ns "$BASTION_NS" sysctl -n net.ipv4.ip_forward) == 0 ]] || die "the bastion forwards IP"
	local node pid failed=0 direct=() jumped=()
	for node in $(node_names); do
		(! tcp_open "$(node_addr "$node")" 22) &
		direct+=($!)
		ssh_jump "$node" true &
		jumped+=($!)
	done
	for pid in "${direct[@]}"; do wait "$pid" || failed=1; done
	((failed == 0)) || die "a node is reachable directly from the root namespace"
	for pid in "${jumped[@]}"; do wait "$pid" || failed=1; done
	((failed == 0)) || die "a node is not reachable with ssh -J through the bastion"
	log "isolation checked: no node reachable directly, every node reachable through the bastion"
}

# --- commands ---------------------------------------------------------------------------------

cmd_up() {
	local n=${1:-4} node
	if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > 200)); then die "N must be 1..200, got '$n'"; fi
	(($(id -u) == 0)) || die "run as root (namespaces, mounts)"
	local tool
	for tool in ip nsenter unshare ssh ssh-keygen docker-registry curl openssl sudo "$SSHD" "$DOCKERD" "$DOCKER"; do
		command -v "$tool" >/dev/null || die "$tool is missing: run scripts/install-deps.sh"
	done
	mkdir -p "$STATE"/{run,log,etc,registry}
	if [[ -s $STATE/nodes && $(node_count) != "$n" ]] && running_pid bastion-sshd >/dev/null; then
		die "instance $ID is up with $(node_count) nodes: run scripts/testbed.sh down first"
	fi
	echo "$n" >"$STATE/nodes"
	make_keys
	write_sshd_config bastion yes
	for node in $(node_names); do write_sshd_config "$node" no; done
	write_known_hosts
	write_hosts_files
	write_daemon_files
	make_network
	start_bastion
	start_control_dockerd
	for node in $(node_names); do start_node_namespace "$node"; done
	for node in $(node_names); do
		start_node_sshd "$node"
		start_node_dockerd "$node"
	done
	wait_for "registry" 20 curl -sf "http://$BASTION_ADDR:5000/v2/" || die "registry did not start: $STATE/log/registry.log"
	wait_for "bastion sshd" 10 tcp_open "$BASTION_ADDR" 22 || die "bastion sshd did not start: $STATE/log/bastion-sshd.log"
	for node in $(node_names); do
		wait_for "$node sshd" 10 tcp_open "$(node_addr "$node")" 22 "$BASTION_NS" || die "$node sshd did not start: $STATE/log/$node-sshd.log"
	done
	wait_dockerd control "$STATE/control" unshare -m --propagation private "$SELF" _control-namespace
	for node in $(node_names); do
		# shellcheck disable=SC2046
		wait_dockerd "$node" "$STATE/$node" $(node_dockerd_launcher "$node")
	done
	check_isolation
	write_inventory
	TESTBED_CONTROL_DOCKER_HOST=unix://$(control_socket) TESTBED_REGISTRY_URL=http://$BASTION_ADDR:5000 \
		"$REPO/scripts/testbed-images.sh" ensure
	log "up: $n nodes; inventory $INVENTORY_DIR/hosts.ini; eval \"\$(TESTBED_ID=$ID scripts/testbed.sh env)\""
}

cmd_down() {
	local purge=${1:-} name
	if [[ -d $STATE/run ]]; then
		# dockerd first (it stops its containerd), then the rest, then the namespace holders.
		for name in $(started '*-dockerd'); do stop_bg "$name" & done
		wait
		for name in $(started '*'); do stop_bg "$name"; done
	fi
	remove_network
	# Nodes come up empty next time; keys, registry data and the control daemon stay.
	for name in "$STATE"/node*; do [[ ! -d $name ]] || rm -rf "$name"; done
	if [[ $purge == --purge ]]; then
		rm -rf "$STATE" "$INVENTORY_DIR"
	elif [[ -n $purge ]]; then
		die "down takes only --purge"
	fi
	log "down"
}

cmd_status() {
	local name pid ok=0
	[[ -s $STATE/nodes ]] || { echo "instance $ID: never brought up"; return 1; }
	echo "instance $ID: $(node_count) nodes, state $STATE, inventory $INVENTORY_DIR"
	for name in registry bastion-sshd control-dockerd $(for n in $(node_names); do echo "$n-ns $n-sshd $n-dockerd"; done); do
		if pid=$(running_pid "$name"); then echo "  $name: running (pid $pid)"; else echo "  $name: stopped"; ok=1; fi
	done
	echo "  memory: $(memory_use)"
	echo "  disk: $(du -sxm "$STATE" | cut -f1) MB in $STATE"
	return $ok
}

# The resident memory of every process we started and of their descendants (containerd).
memory_use() {
	local roots=() name pid
	for name in $(started '*'); do
		pid=$(running_pid "$name") && roots+=("$pid")
	done
	ps -e -o pid=,ppid=,rss= | awk -v roots="${roots[*]}" '
		BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) ours[r[i]] = 1 }
		{ parent[$1] = $2; rss[$1] = $3 }
		END { for (p in rss) { q = p; while (q > 1 && !(q in ours)) q = parent[q]
		                       if (!(q in ours)) continue
		                       total += rss[p]; count++; pss = 0
		                       file = "/proc/" p "/smaps_rollup"
		                       while ((getline line < file) > 0) if (line ~ /^Pss:/) { split(line, f, " "); pss = f[2] }
		                       close(file); shared += pss }
		      printf "%d MB RSS (%d MB PSS) in %d processes\n", total / 1024, shared / 1024, count }'
}

cmd_env() {
	if ! running_pid bastion-sshd >/dev/null || [[ ! -s $INVENTORY_DIR/hosts.ini ]]; then
		log "instance $ID is not up: run scripts/testbed.sh up"
		return 1
	fi
	local node i=0 images
	images=$(tr '\n' ' ' <"$INVENTORY_DIR/images.txt" | sed 's/ $//')
	kv() { echo "$1='$2'"; }
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
	kv TESTBED_CONTROL_DOCKER_HOST "unix://$(control_socket)"
	kv TESTBED_NODES "$(node_names | tr '\n' ' ' | sed 's/ $//')"
	kv TESTBED_FLATCAR_NODE "node$(node_count)"
	for node in $(node_names); do
		i=${node#node}
		kv "TESTBED_NODE${i}_ADDR" "$(node_addr "$node")"
		kv "TESTBED_NODE${i}_DOCKER_HOST" "unix://$(node_socket "$node")"
		kv "TESTBED_NODE${i}_NETNS" "$(node_ns "$node")"
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

cmd_start_stop() { # start|stop NODE sshd|dockerd
	local action=$1 node=${2:?usage: start|stop NODE sshd|dockerd} server=${3:?usage: start|stop NODE sshd|dockerd}
	if ! [[ $node =~ ^node[0-9]+$ ]] || ((${node#node} > $(node_count))); then die "no such node: $node"; fi
	case "$action-$server" in
	stop-sshd | stop-dockerd) stop_bg "$node-$server" ;;
	start-sshd)
		start_node_sshd "$node"
		wait_for "$node sshd" 10 tcp_open "$(node_addr "$node")" 22 "$BASTION_NS" || die "$node sshd did not start"
		;;
	start-dockerd)
		start_node_dockerd "$node"
		# shellcheck disable=SC2046
		wait_dockerd "$node" "$STATE/$node" $(node_dockerd_launcher "$node")
		;;
	*) die "unknown server '$server' (sshd or dockerd)" ;;
	esac
}

case "${1:-}" in
up) shift; cmd_up "$@" ;;
down) shift; cmd_down "$@" ;;
status) cmd_status ;;
env) cmd_env ;;
ssh) shift; cmd_ssh "$@" ;;
exec) shift; cmd_exec "$@" ;;
start | stop) cmd_start_stop "$@" ;;
_node-namespace) node_namespace_main "$2" ;;
_control-namespace) shift; control_namespace_main "$@" ;;
*) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
