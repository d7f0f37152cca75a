#!/usr/bin/env bash
# Test images for the dropship test bed, built with no outside registry and pushed to the test
# bed's registries, then removed from the control daemon so that a pull is really needed.
#
#   scripts/testbed-images.sh [small]   3 images of ~2.5 MB sharing a 1 MB base (the default set)
#   scripts/testbed-images.sh large     3 images of ~60 MB sharing a 30 MB base (benchmarks)
#   scripts/testbed-images.sh huge      1 image of ~1 GB, 5 layers (memory benchmarks; on request only)
#   scripts/testbed-images.sh bump [small|large|huge]
#                                       a "version bump": the set's first image as tag v2, with
#                                       only its last layer changed (512 KB small, 5 MB large, 8 MB huge)
#   scripts/testbed-images.sh multiarch an OCI image index, dropship/multiarch:v1, with a linux/amd64
#                                       and a linux/arm64 (v8) manifest: a shared 512 KB base, then a
#                                       layer of its own each (/arch says which, 256 KB of data)
#   scripts/testbed-images.sh private   dropship/private:v1 (~1.3 MB, linux/amd64) in the secure
#                                       registry (HTTPS with the test CA, htpasswd auth)
#   scripts/testbed-images.sh list [small|large|huge|bump [SET]|multiarch|private]
#                                       print the image references
#   scripts/testbed-images.sh ensure    build what the tests need (small, multiarch, private)
#                                       unless the registries have it
#
# IMAGES=large selects the large set too. Every image is `FROM scratch` with several layers of
# incompressible data (AES-CTR keystream of a fixed seed, so every rebuild gives the same bytes
# and the same layers) and a little text; the images of a set share their base layer(s). The
# sets are built with the control daemon (Debian's docker, classic builder), whose image config
# records the build time, so their image IDs differ between rebuilds. The multi-arch and the
# private image are written by hand (OCI layout: tar, gzip -n, JSON; no buildx, which Debian's
# docker lacks, and no daemon, which could only make its own architecture) and pushed with curl
# through the registry API: they are the same bytes, digests included, on every rebuild.
# Uses the instance of $TESTBED_ID (scripts/testbed.sh env), with Debian's docker client.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DOCKER=/usr/bin/docker
REGISTRY=${TESTBED_REGISTRY:-registry.testbed:5000}
SECURE_REGISTRY=${TESTBED_SECURE_REGISTRY:-secure.testbed:5443}
KB=1024
MB=$((1024 * 1024))

log() { echo "testbed-images[${TESTBED_ID:-0}]: $*" >&2; }

# set_layout SET: image names and layer sizes of a set.
set_layout() {
	case "$1" in
	small) NAMES=(app1 app2 app3) BASE_SIZES=("$MB") APP_SIZE=$MB LAST_SIZE=$((512 * KB)) ;;
	large) NAMES=(big1 big2 big3) BASE_SIZES=($((20 * MB)) $((10 * MB))) APP_SIZE=$((25 * MB)) LAST_SIZE=$((5 * MB)) ;;
	huge) NAMES=(huge1) BASE_SIZES=($((512 * MB)) $((256 * MB))) APP_SIZE=$((256 * MB)) LAST_SIZE=$((8 * MB)) ;;
	*) log "unknown image set '$1' (small, large or huge)"; exit 2 ;;
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

# --- hand-written OCI images -----------------------------------------------------------------
# $WORK/blobs/<hex>: the blobs of the images being written; each function prints descriptors.

blob() { # FILE: moves FILE into $WORK/blobs, prints "DIGEST SIZE"
	local hex size
	hex=$(sha256sum "$1" | cut -d' ' -f1)
	size=$(stat -c %s "$1")
	mv "$1" "$WORK/blobs/$hex"
	echo "sha256:$hex $size"
}

# layer DIR: DIR's tree as a gzip layer, the same bytes every time; prints "DIGEST SIZE DIFF_ID".
layer() {
	local tar=$WORK/layer.tar
	find "$1" -exec touch -h -d @1700000000 {} +
	chmod -R u=rwX,go=rX "$1"
	tar --format=gnu --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner -C "$1" -cf "$tar" .
	local diff_id
	diff_id=sha256:$(sha256sum "$tar" | cut -d' ' -f1)
	gzip -n -6 "$tar"
	echo "$(blob "$tar.gz") $diff_id"
}

json_blob() { # JSON: prints "DIGEST SIZE"
	printf '%s' "$1" >"$WORK/json"
	blob "$WORK/json"
}

# image_manifest NAME ARCH VARIANT LAYER...: config and manifest for linux/ARCH (LAYER: "DIGEST
# SIZE DIFF_ID"); prints the manifest's "DIGEST SIZE".
image_manifest() {
	local name=$1 arch=$2 variant=$3 layer digest size diff_id diff_ids=() layers=()
	shift 3
	for layer; do
		read -r digest size diff_id <<<"$layer"
		diff_ids+=("\"$diff_id\"")
		layers+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"$digest\",\"size\":$size}")
	done
	local config
	config=$(json_blob "{\"architecture\":\"$arch\",\"os\":\"linux\",${variant:+\"variant\":\"$variant\",}\"created\":\"2023-11-14T22:13:20Z\",\"config\":{\"Labels\":{\"org.dropship.testbed.image\":\"$name\",\"org.dropship.testbed.arch\":\"$arch\"}},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$(IFS=,; echo "${diff_ids[*]}")]}}")
	read -r digest size <<<"$config"
	json_blob "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$digest\",\"size\":$size},\"layers\":[$(IFS=,; echo "${layers[*]}")]}"
}

arch_layer() { # ARCH: /arch and some data of its own
	local dir=$WORK/tree-$1
	mkdir -p "$dir/app"
	echo "$1" >"$dir/arch"
	random_file "$dir/app/multiarch-$1.bin" $((256 * KB)) "multiarch-$1"
	layer "$dir"
}

build_multiarch() { # prints the index's "DIGEST SIZE"
	mkdir -p "$WORK/tree-base/base"
	random_file "$WORK/tree-base/base/multiarch-base.bin" $((512 * KB)) multiarch-base
	text_file "$WORK/tree-base/base/README" "base of the multi-arch image"
	local base amd64 arm64
	base=$(layer "$WORK/tree-base")
	amd64=$(image_manifest multiarch amd64 "" "$base" "$(arch_layer amd64)")
	arm64=$(image_manifest multiarch arm64 v8 "$base" "$(arch_layer arm64)")
	json_blob "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[$(index_entry amd64 "" "$amd64"),$(index_entry arm64 v8 "$arm64")]}"
}

index_entry() { # ARCH VARIANT "DIGEST SIZE"
	local digest size
	read -r digest size <<<"$3"
	echo "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"$digest\",\"size\":$size,\"platform\":{\"architecture\":\"$1\",\"os\":\"linux\"${2:+,\"variant\":\"$2\"}}}"
}

build_private() { # prints the manifest's "DIGEST SIZE"
	mkdir -p "$WORK/tree-private-base/base" "$WORK/tree-private-app/app"
	random_file "$WORK/tree-private-base/base/private-base.bin" "$MB" private-base
	random_file "$WORK/tree-private-app/app/private.bin" $((256 * KB)) private-app
	text_file "$WORK/tree-private-app/app/private.conf" "private image configuration"
	image_manifest private amd64 "" "$(layer "$WORK/tree-private-base")" "$(layer "$WORK/tree-private-app")"
}

# The registry API with curl: the open registry as it is, the secure one with the test CA and
# the user's password (given to curl in a config on a pipe, never on its command line).
api() { # URL CURL_ARGS...
	local url=$1
	shift
	if [[ $url == "$TESTBED_SECURE_URL"* ]]; then
		curl -sSf --cacert "$TESTBED_SECURE_CA" -K <(printf 'user = "%s:%s"\n' "$TESTBED_SECURE_USER" "$TESTBED_SECURE_PASSWORD") "$@" "$url"
	else
		curl -sSf "$@" "$url"
	fi
}

# push_oci BASE_URL REPO TAG MEDIA_TYPE "DIGEST SIZE": the blobs of $WORK/blobs, then the image
# manifests by digest (a registry takes a manifest only once it has its blobs), then the top one
# (the index, or the only manifest) by tag.
push_oci() {
	local base=$1 url=$1/v2/$2 tag=$3 type=$4 top=${5%% *} file manifests=()
	for file in "$WORK/blobs"/*; do
		[[ sha256:${file##*/} != "$top" ]] || continue
		if grep -q '"mediaType":"application/vnd.oci.image.manifest.v1+json","config"' "$file"; then
			manifests+=("$file")
		else
			push_blob "$base" "$url" "$file"
		fi
	done
	for file in "${manifests[@]}"; do
		api "$url/manifests/sha256:${file##*/}" -o /dev/null -X PUT -H "Content-Type: application/vnd.oci.image.manifest.v1+json" -T "$file"
	done
	api "$url/manifests/$tag" -o /dev/null -X PUT -H "Content-Type: $type" -T "$WORK/blobs/${top#sha256:}"
}

push_blob() { # BASE_URL REPO_URL FILE: a monolithic upload (POST, then PUT with the digest)
	local digest=sha256:${3##*/} location
	! api "$2/blobs/$digest" -o /dev/null -I 2>/dev/null || return 0
	location=$(api "$2/blobs/uploads/" -o /dev/null -D - -X POST | tr -d '\r' | awk 'tolower($1) == "location:" { print $2 }')
	[[ $location == http* ]] || location=$1$location
	if [[ $location == *\?* ]]; then location+="&digest=$digest"; else location+="?digest=$digest"; fi
	api "$location" -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' -T "$3"
}

push_multiarch() {
	local top
	top=$(build_multiarch)
	push_oci "$TESTBED_REGISTRY_URL" dropship/multiarch v1 application/vnd.oci.image.index.v1+json "$top"
	log "pushed $(ref multiarch) (index ${top%% *})"
}

push_private() {
	local top
	top=$(build_private)
	push_oci "$TESTBED_SECURE_URL" dropship/private v1 application/vnd.oci.image.manifest.v1+json "$top"
	log "pushed $(ref private) (manifest ${top%% *})"
}

ref() { # multiarch|private
	case "$1" in
	multiarch) echo "$REGISTRY/dropship/multiarch:v1" ;;
	private) echo "$SECURE_REGISTRY/dropship/private:v1" ;;
	esac
}

in_registry() { # REF
	local path=${1#*/} url=$TESTBED_REGISTRY_URL
	[[ $1 != "$SECURE_REGISTRY"/* ]] || url=$TESTBED_SECURE_URL
	api "$url/v2/${path%:*}/manifests/${path##*:}" -o /dev/null -I \
		-H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
		-H 'Accept: application/vnd.oci.image.manifest.v1+json' -H 'Accept: application/vnd.oci.image.index.v1+json' 2>/dev/null
}

load_env() {
	[[ -n ${TESTBED_CONTROL_DOCKER_HOST:-} && -n ${TESTBED_REGISTRY_URL:-} && -n ${TESTBED_SECURE_URL:-} ]] && return 0
	local env
	env=$("$REPO/scripts/testbed.sh" env) || exit 1
	eval "$env"
}

with_work() { # FUNCTION: runs it with $WORK, an empty directory removed afterwards
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/dropship-images.XXXXXX")
	trap 'rm -rf "$WORK"' EXIT
	mkdir "$WORK/blobs"
	"$1"
	rm -rf "$WORK"
	trap - EXIT
}

SET=${IMAGES:-small}
case "${1:-$SET}" in
small | large | huge) SET=${1:-$SET}; load_env; build_and_push "$SET" ;;
bump) SET=${2:-$SET}; load_env; build_and_push "$SET" bump; refs "$SET" bump ;;
multiarch) load_env; with_work push_multiarch ;;
private) load_env; with_work push_private ;;
list)
	case "${2:-small}" in
	bump) refs "${3:-small}" bump ;;
	multiarch | private) ref "$2" ;;
	*) refs "${2:-small}" ;;
	esac
	;;
ensure)
	load_env
	SET=small
	for ref in $(refs small); do
		in_registry "$ref" || { build_and_push small; break; }
	done
	in_registry "$(ref multiarch)" || with_work push_multiarch
	in_registry "$(ref private)" || with_work push_private
	log "the registries have the small set, the multi-arch and the private image"
	;;
*) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
