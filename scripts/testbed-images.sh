#!/usr/bin/env bash
# Test images for the dropship test bed, built with no outside registry and pushed to the test
# bed's registry, then removed from the control daemon so that a pull is really needed.
#
#   scripts/testbed-images.sh [small]   3 images of ~2.5 MB sharing a 1 MB base (the default set)
#   scripts/testbed-images.sh large     3 images of ~60 MB sharing a 30 MB base (benchmarks)
#   scripts/testbed-images.sh bump [small|large]
#                                       a "version bump": the set's first image as tag v2, with
#                                       only its last layer changed (512 KB small, 5 MB large)
#   scripts/testbed-images.sh list [small|large|bump [SET]]   print the image references
#   scripts/testbed-images.sh ensure    build the small set unless the registry has it
#
# IMAGES=large selects the large set too. Every image is `FROM scratch` with several COPY layers
# of incompressible data (AES-CTR keystream of a fixed seed, so every rebuild gives the same
# bytes and the same layers) and a little text; the images of a set share their base layer(s).
# Image IDs differ between rebuilds: the image config records the build time.
# Uses the instance of $TESTBED_ID (scripts/testbed.sh env), with Debian's docker client.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DOCKER=/usr/bin/docker
REGISTRY=${TESTBED_REGISTRY:-registry.testbed:5000}
KB=1024
MB=$((1024 * 1024))

log() { echo "testbed-images[${TESTBED_ID:-0}]: $*" >&2; }

# set_layout SET: image names and layer sizes of a set.
set_layout() {
	case "$1" in
	small) NAMES=(app1 app2 app3) BASE_SIZES=($MB) APP_SIZE=$MB LAST_SIZE=$((512 * KB)) ;;
	large) NAMES=(big1 big2 big3) BASE_SIZES=($((20 * MB)) $((10 * MB))) APP_SIZE=$((25 * MB)) LAST_SIZE=$((5 * MB)) ;;
	*) log "unknown image set '$1' (small or large)"; exit 2 ;;
	esac
}

refs() { # SET [bump]
	set_layout "$1"
	if [[ ${2:-} == bump ]]; then
		echo "$REGISTRY/dropship/${NAMES[0]}:v2"
	else
		local name
		for name in "${NAMES[@]}"; do echo "$REGISTRY/dropship/$name:v1"; done
	fi
}

# random_file FILE SIZE SEED: deterministic, incompressible.
random_file() {
	head -c "$2" /dev/zero | openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:dropship-$3" >"$1"
}

text_file() { # FILE TITLE
	{
		echo "dropship test bed image layer: $2"
		local i
		for ((i = 1; i <= 200; i++)); do echo "line $i of $2: compressible text, repeated on purpose."; done
	} >"$1"
}

# context DIR NAME VERSION: one directory per layer, each holding the tree that layer adds.
make_context() {
	local dir=$1 name=$2 version=$3 i
	mkdir -p "$dir"
	for i in "${!BASE_SIZES[@]}"; do
		mkdir -p "$dir/base$i/base"
		random_file "$dir/base$i/base/data$i.bin" "${BASE_SIZES[$i]}" "base$i-$SET"
	done
	text_file "$dir/base0/base/README" "base of the $SET set"
	mkdir -p "$dir/app/app" "$dir/config/app" "$dir/last/app"
	random_file "$dir/app/app/$name.bin" "$APP_SIZE" "$name-app"
	text_file "$dir/config/app/$name.conf" "$name configuration"
	random_file "$dir/last/app/$name-release.bin" "$LAST_SIZE" "$name-$version"
	echo "$name $version" >"$dir/last/app/VERSION"
	# Fixed times, so a layer's tar (and its diff ID) is the same on every rebuild.
	find "$dir" -exec touch -h -d @1700000000 {} +
	{
		echo "FROM scratch"
		for i in "${!BASE_SIZES[@]}"; do echo "COPY base$i/ /"; done
		echo "COPY app/ /"
		echo "COPY config/ /"
		echo "COPY last/ /"
		echo "LABEL org.dropship.testbed.image=$name org.dropship.testbed.version=$version"
	} >"$dir/Dockerfile"
}

control() { DOCKER_HOST=$TESTBED_CONTROL_DOCKER_HOST "$DOCKER" "$@"; }

build_and_push() { # SET [bump]
	set_layout "$1"
	local work names version ref name
	work=$(mktemp -d "${TMPDIR:-/tmp}/dropship-images.XXXXXX")
	trap 'rm -rf "$work"' RETURN
	if [[ ${2:-} == bump ]]; then names=("${NAMES[0]}") version=v2; else names=("${NAMES[@]}") version=v1; fi
	local pushed=()
	for name in "${names[@]}"; do
		ref=$REGISTRY/dropship/$name:$version
		make_context "$work/$name" "$name" "$version"
		DOCKER_BUILDKIT=0 control build -q -t "$ref" "$work/$name" >/dev/null
		control push -q "$ref" >/dev/null
		pushed+=("$ref")
		log "pushed $ref"
	done
	control rmi "${pushed[@]}" >/dev/null
	control image prune -f >/dev/null
}

in_registry() { # REF
	local path=${1#*/}
	curl -sf -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
		"$TESTBED_REGISTRY_URL/v2/${path%:*}/manifests/${path##*:}"
}

load_env() {
	[[ -n ${TESTBED_CONTROL_DOCKER_HOST:-} && -n ${TESTBED_REGISTRY_URL:-} ]] && return 0
	local env
	env=$("$REPO/scripts/testbed.sh" env) || exit 1
	eval "$env"
}

SET=${IMAGES:-small}
case "${1:-$SET}" in
small | large) SET=${1:-$SET}; load_env; build_and_push "$SET" ;;
bump) SET=${2:-$SET}; load_env; build_and_push "$SET" bump; refs "$SET" bump ;;
list) if [[ ${2:-} == bump ]]; then refs "${3:-small}" bump; else refs "${2:-small}"; fi ;;
ensure)
	load_env
	SET=small
	for ref in $(refs small); do
		in_registry "$ref" || { build_and_push small; exit 0; }
	done
	log "the registry has the small set"
	;;
*) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
