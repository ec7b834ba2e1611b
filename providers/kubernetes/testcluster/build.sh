#!/bin/sh
# build.sh builds the Kubernetes binaries the test cluster runs, from the Go
# module proxy, at pinned versions, and caches them by Kubernetes version and
# Go version so that later runs on the same machine skip the build.
#
# It prints the cache directory on its last line of standard output. The
# directory holds kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet, kubectl, agent-sandbox-controller and crds/ (the agent-sandbox
# CustomResourceDefinitions). The cache is filled atomically: everything is
# built into a temporary directory beside it, which is renamed into place only
# when every binary exists.
#
# With --check it builds nothing: it prints the directory and exits 0 when the
# cache is complete, and exits 1 otherwise.
#
# Environment: PERIMETER_K8S_CACHE (default $HOME/.cache/perimeter/k8s).
#
# Why the go.mod is patched: the module zip of k8s.io/kubernetes has no
# staging/ tree, so its "replace ./staging/..." lines cannot resolve. The
# staging modules are published at v0.<minor>.<patch>; the build requires those
# instead (see ../../../docs/kubernetes.md).
set -eu

K8S_VERSION=v1.34.4
STAGING_VERSION=v0.34.4
AGENT_SANDBOX_VERSION=v0.2.1

GO=${GO:-go}
GOVER=$("$GO" env GOVERSION)
ROOT=${PERIMETER_K8S_CACHE:-$HOME/.cache/perimeter/k8s}
DEST="$ROOT/$K8S_VERSION-$GOVER"
BINS="kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl agent-sandbox-controller"

complete() {
	for b in $BINS; do
		[ -x "$1/$b" ] || return 1
	done
	[ -f "$1/crds/agents.x-k8s.io_sandboxes.yaml" ] || return 1
}

if complete "$DEST"; then
	echo "$DEST"
	exit 0
fi
if [ "${1:-}" = --check ]; then
	exit 1
fi

mkdir -p "$ROOT"
# One build at a time per cache: a second caller waits, then finds the cache.
exec 9>"$ROOT/.lock"
flock 9
if complete "$DEST"; then
	echo "$DEST"
	exit 0
fi

# With the lock held no other build runs: a .build.* directory left now is
# from a build that was killed before its trap could remove it.
for stale in "$ROOT"/.build.*; do
	[ -d "$stale" ] || continue
	echo "build.sh: removing $stale, left by an interrupted build" >&2
	chmod -R u+w "$stale" 2>/dev/null || true
	rm -rf "$stale"
done
TMP=$(mktemp -d "$ROOT/.build.XXXXXX")
trap 'chmod -R u+w "$TMP" 2>/dev/null; rm -rf "$TMP"' EXIT INT TERM
mkdir -p "$TMP/out/crds"

export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local

echo "build.sh: downloading k8s.io/kubernetes@$K8S_VERSION" >&2
kdir=$(cd "$TMP" && "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$kdir" ] || { echo "build.sh: module download gave no directory" >&2; exit 1; }
cp -r "$kdir" "$TMP/kubernetes"
chmod -R u+w "$TMP/kubernetes"
cd "$TMP/kubernetes"
rm -rf go.work go.work.sum vendor
# Drop the replace block and require the published staging modules.
sed -i -e '/^replace (/,/^)/d' \
	-e "s#^\([[:space:]]*k8s\.io/[a-z0-9-]*\) v0\.0\.0\$#\1 $STAGING_VERSION#" go.mod
if grep -q ' v0\.0\.0$' go.mod; then
	echo "build.sh: go.mod still requires v0.0.0 modules:" >&2
	grep ' v0\.0\.0$' go.mod >&2
	exit 1
fi

pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=34 -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
echo "build.sh: building Kubernetes $K8S_VERSION with $GOVER (this takes a while)" >&2
nice -n 10 "$GO" build -trimpath -ldflags "$ldflags" -o "$TMP/out/" \
	./cmd/kube-apiserver ./cmd/kube-controller-manager ./cmd/kube-scheduler \
	./cmd/kubelet ./cmd/kubectl

echo "build.sh: building agent-sandbox $AGENT_SANDBOX_VERSION" >&2
adir=$(cd "$TMP" && "$GO" mod download -json "sigs.k8s.io/agent-sandbox@$AGENT_SANDBOX_VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$adir" ] || { echo "build.sh: agent-sandbox download gave no directory" >&2; exit 1; }
cp -r "$adir" "$TMP/agent-sandbox"
chmod -R u+w "$TMP/agent-sandbox"
cd "$TMP/agent-sandbox"
nice -n 10 "$GO" build -trimpath -ldflags "-s -w" -o "$TMP/out/agent-sandbox-controller" ./cmd/agent-sandbox-controller
cp k8s/crds/*.yaml "$TMP/out/crds/"

complete "$TMP/out" || { echo "build.sh: a binary is missing after the build" >&2; exit 1; }
rm -rf "$DEST"
mv "$TMP/out" "$DEST"
echo "$DEST"
