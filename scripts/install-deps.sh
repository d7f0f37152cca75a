#!/usr/bin/env bash
# Installs what dropship's tests, demo and test bed need on a fresh Debian/Ubuntu machine, as root.
# Idempotent and fast when everything is there: apt runs only for a missing program, the venv is
# made only when its ansible-core is missing or not the pinned version, pip runs only when a pinned
# Python package is missing or another version.
#
#   scripts/install-deps.sh           Debian packages and <repo>/.venv (ansible-core; grpcio and
#                                     grpcio-tools for the test bed's CRI client)
#   scripts/install-deps.sh --check   exit 1 (and name them) if anything is missing; install nothing
#
# The ansible.posix collection (synchronize) is not installed: no PyPI package carries it alone
# and Ansible Galaxy is not reachable from here.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ANSIBLE_CORE=2.19.14
# The test bed's CRI client (scripts/testbed.sh cri-images): gRPC, and protoc for its stubs.
PYTHON_PACKAGES=(grpcio==1.85.1 grpcio-tools==1.85.1 protobuf==7.36.2)
VENV=$REPO/.venv

# program -> Debian package that provides it
PROGRAMS=(
	/usr/sbin/sshd:openssh-server
	ssh:openssh-client
	/usr/sbin/dockerd:docker.io
	containerd:containerd
	runc:runc
	podman:podman
	skopeo:skopeo
	htpasswd:apache2-utils
	docker-registry:docker-registry
	zstd:zstd
	pigz:pigz
	ip:iproute2
	sudo:sudo
	curl:curl
	openssl:openssl
	nsenter:util-linux
	python3:python3
)

missing_packages() {
	local entry program
	for entry in "${PROGRAMS[@]}"; do
		program=${entry%%:*}
		command -v "$program" >/dev/null 2>&1 || echo "${entry##*:}"
	done
	python3 -c 'import ensurepip, venv' 2>/dev/null || echo python3-venv
}

venv_ok() {
	[[ -x $VENV/bin/ansible-inventory ]] &&
		[[ "$("$VENV/bin/python" -c 'import ansible.release; print(ansible.release.__version__)' 2>/dev/null)" == "$ANSIBLE_CORE" ]]
}

missing_python_packages() { # the pinned ones the venv lacks or has in another version
	local installed
	installed=$("$VENV/bin/pip" freeze --disable-pip-version-check 2>/dev/null | tr '[:upper:]_' '[:lower:]-')
	local package
	for package in "${PYTHON_PACKAGES[@]}"; do grep -qx "$package" <<<"$installed" || echo "$package"; done
}

check_only=false
[[ ${1:-} != --check ]] || check_only=true

mapfile -t packages < <(missing_packages | sort -u)
if ((${#packages[@]})); then
	$check_only && { echo "install-deps: missing Debian packages: ${packages[*]}" >&2; exit 1; }
	(($(id -u) == 0)) || { echo "install-deps: run as root to install: ${packages[*]}" >&2; exit 1; }
	echo "install-deps: installing ${packages[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null 2>&1 || {
		apt-get update -q >/dev/null
		apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null
	}
fi

if ! venv_ok; then
	$check_only && { echo "install-deps: missing $VENV with ansible-core==$ANSIBLE_CORE" >&2; exit 1; }
	echo "install-deps: making $VENV with ansible-core==$ANSIBLE_CORE" >&2
	python3 -m venv "$VENV"
	"$VENV/bin/pip" install -q --disable-pip-version-check "ansible-core==$ANSIBLE_CORE"
fi
mapfile -t python_packages < <(missing_python_packages)
if ((${#python_packages[@]})); then
	$check_only && { echo "install-deps: missing in $VENV: ${python_packages[*]}" >&2; exit 1; }
	echo "install-deps: installing ${python_packages[*]} into $VENV" >&2
	"$VENV/bin/pip" install -q --disable-pip-version-check "${python_packages[@]}"
fi
$check_only || echo "install-deps: everything is installed" >&2
