#!/bin/bash
# cluster.sh runs a real, single-node Kubernetes cluster for the provider's
# tests, entirely inside a network namespace and a mount namespace it makes,
# and takes it down again restoring every host setting it changed.
#
#   cluster.sh up DIR      start the cluster; state, logs and kubeconfig in DIR
#   cluster.sh down DIR    stop it, restore the host, verify nothing is left
#   cluster.sh exec DIR -- CMD...   run CMD inside the cluster's network namespace
#   cluster.sh test        up, go test the provider in both modes inside, down
#
# Parts: the binaries of build.sh (Kubernetes v1.34.4 and agent-sandbox
# v0.2.1, built once and cached); Debian's etcd-server, containerd, runc,
# containernetworking-plugins, umoci, skopeo and busybox-static. No registry
# is reachable, so the images (busybox:stable for sandboxes and a pause image)
# are built here from the busybox-static binary and loaded into containerd.
#
# Containment: everything runs with its network namespace set to a fresh
# `ip netns` namespace (node IP 10.211.0.1 on its loopback, pods on a bridge
# inside it, the API server on its 127.0.0.1:6443), and with its mount
# namespace set to a private one whose /run, /var/lib and /var/log are empty
# directories under DIR, so containerd's and the kubelet's mounts and files
# never reach the host. Pods' cgroups live under a cgroup root of the run's
# own name. Host settings the kubelet changes (the kernel sysctls below) are
# saved at `up` and restored at `down`, which then compares the host with a
# snapshot taken before `up` (every writable sysctl, links, addresses,
# routes, rules, iptables and ip6tables rules, network namespaces, mount
# points, cgroups; see snapshot) and fails if anything differs. Every
# process is stopped by PID.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
NODE_IP=10.211.0.1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
NODE_NAME=perimeter-node
# The sysctls the kubelet sets (protectKernelDefaults: false).
SYSCTLS="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes"

die() { echo "cluster.sh: $*" >&2; exit 1; }
log() { echo "cluster.sh: $*" >&2; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

need_tools() {
	local missing=""
	for t in etcd containerd containerd-shim-runc-v2 runc ctr umoci skopeo ip iptables-save nsenter unshare openssl busybox; do
		command -v "$t" >/dev/null 2>&1 || missing="$missing $t"
	done
	[ -x /usr/lib/cni/bridge ] || missing="$missing /usr/lib/cni/bridge"
	[ -z "$missing" ] || die "missing tools:$missing (apt-get install etcd-server containerd runc containernetworking-plugins umoci skopeo busybox-static iptables)"
}

# snapshot writes what `down` compares against: every writable sysctl (the
# kubelet sets global vm.* and kernel.* ones; kernel.ns_last_pid moves by
# itself), the host's links, addresses, routes and policy rules, its
# iptables and ip6tables rules (counters dropped), the network namespaces,
# every mount point, and the cgroups: each hierarchy's top level and any
# kubepods cgroup anywhere. Kernel modules go to a separate list (see down).
snapshot() {
	local out=$1
	{
		echo "# sysctls"
		sysctl -a 2>/dev/null | awk 'NR==FNR{w[$0]=1; next} ($1 in w) && $1 != "kernel.ns_last_pid"' \
			<(find /proc/sys -type f -perm -200 | sed 's#^/proc/sys/##; s#/#.#g') -
		echo "# links"
		ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort
		echo "# addresses"
		ip -o addr show | awk '{print $2, $3, $4}' | sort
		echo "# routes"
		{ ip route show table all; ip -6 route show table all; } | sort
		echo "# rules"
		{ ip rule show; ip -6 rule show; } | sort
		echo "# iptables"
		iptables-save 2>/dev/null | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]//' || true
		echo "# ip6tables"
		ip6tables-save 2>/dev/null | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]//' || true
		echo "# netns"
		ip netns list 2>/dev/null | awk '{print $1}' | sort
		echo "# mounts"
		awk '{print $5, $9}' /proc/self/mountinfo | sort
		echo "# cgroups"
		for h in /sys/fs/cgroup/*/; do
			[ -f "$h/cgroup.procs" ] || continue
			find "$h" -mindepth 1 -maxdepth 1 -type d
			find "$h" -mindepth 2 -type d -name 'kubepods*' -prune
		done | sort
	} >"$out"
	if [ -r /proc/modules ]; then awk '{print $1}' /proc/modules | sort; fi >"$out.modules"
}

in_ns() { # run a command in the cluster's namespaces
	nsenter --net="/run/netns/$NS" --mount="/proc/$(cat "$DIR/holder.pid")/ns/mnt" -- "$@"
}

start() { # start NAME CMD...: a daemon in the namespaces, PID recorded
	local n=$1
	shift
	nsenter --net="/run/netns/$NS" --mount="/proc/$(cat "$DIR/holder.pid")/ns/mnt" -- "$@" >"$DIR/logs/$n.log" 2>&1 &
	echo "$!" >"$DIR/pids/$n"
}

wait_for() { # wait_for WHAT SECONDS CMD...
	local what=$1 secs=$2 i=0
	shift 2
	until "$@" >/dev/null 2>&1; do
		i=$((i + 1))
		[ $i -le $((secs * 5)) ] || die "$what not ready after ${secs}s (logs in $DIR/logs)"
		sleep 0.2
	done
}

pki() {
	local p=$DIR/pki
	mkdir -p "$p"
	cd "$p"
	openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=perimeter-test-ca" 2>/dev/null
	cert() { # cert NAME SUBJ [SANS]
		openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
		if [ -n "${3:-}" ]; then
			printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$3" >"$1.ext"
		else
			printf 'extendedKeyUsage=clientAuth\n' >"$1.ext"
		fi
		openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 2 -extfile "$1.ext" 2>/dev/null
	}
	cert apiserver "/CN=kube-apiserver" "IP:127.0.0.1,IP:$NODE_IP,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
	cert admin "/O=system:masters/CN=perimeter-admin"
	cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
	cert apiserver-kubelet "/O=system:masters/CN=kube-apiserver-kubelet-client"
	openssl genrsa -out sa.key 2048 2>/dev/null
	openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
	cd - >/dev/null
}

kubeconfig() { # kubeconfig FILE CERT
	cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: perimeter-test
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority: $DIR/pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $DIR/pki/$2.crt
    client-key: $DIR/pki/$2.key
contexts:
- name: perimeter-test
  context: {cluster: perimeter-test, user: $2, namespace: default}
current-context: perimeter-test
EOF
}

# images builds busybox:stable (for sandboxes) and the pause image as
# one-layer OCI images from the static busybox, as docker archives.
images() {
	local w=$DIR/images
	mkdir -p "$w"
	umoci init --layout "$w/oci"
	umoci new --image "$w/oci:busybox"
	umoci unpack --image "$w/oci:busybox" "$w/bundle"
	local r=$w/bundle/rootfs
	mkdir -p "$r/bin" "$r/sbin" "$r/usr/bin" "$r/usr/sbin" "$r/etc" "$r/tmp" "$r/root" "$r/workspace" "$r/proc" "$r/sys" "$r/dev"
	chmod 1777 "$r/tmp"
	cp "$(command -v busybox)" "$r/bin/busybox"
	for a in $("$r/bin/busybox" --list-full); do
		[ -e "$r/$a" ] || ln -s /bin/busybox "$r/$a"
	done
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$r/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
	umoci repack --image "$w/oci:busybox" "$w/bundle"
	umoci config --image "$w/oci:busybox" --config.cmd sh --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin
	# The pause image: the same layer, waiting for TERM.
	umoci config --image "$w/oci:busybox" --tag pause \
		--config.entrypoint sh --config.entrypoint -c --config.entrypoint "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait \$!; done" \
		--clear=config.cmd
	skopeo --insecure-policy copy -q "oci:$w/oci:busybox" "docker-archive:$w/busybox.tar:docker.io/library/busybox:stable"
	skopeo --insecure-policy copy -q "oci:$w/oci:pause" "docker-archive:$w/pause.tar:perimeter.local/pause:1"
	rm -rf "$w/bundle"
}

up_failed() {
	local rc=$?
	[ $rc = 0 ] && return 0
	trap - EXIT
	log "start failed (exit $rc); tearing down; logs in $DIR/logs"
	down || true
	exit $rc
}

up() {
	need_root
	need_tools
	[ -n "${DIR:-}" ] || die "usage: cluster.sh up DIR"
	mkdir -p "$DIR"
	DIR=$(cd "$DIR" && pwd)
	[ ! -e "$DIR/ns" ] || die "$DIR already holds a cluster; run down first"
	[ -z "$(ls -A "$DIR")" ] || die "$DIR is not empty: give cluster.sh up a new or empty directory"
	BIN=$("$HERE/build.sh" | tail -n 1)
	[ -x "$BIN/kube-apiserver" ] || die "build.sh gave no binaries"
	echo "$BIN" >"$DIR/bin"
	ID=$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
	NS=perimeter-k8s-$ID
	CG=perimeter-k8s-$ID
	mkdir -p "$DIR/logs" "$DIR/pids" "$DIR/run" "$DIR/var-lib" "$DIR/var-log" "$DIR/etcd" "$DIR/cni" "$DIR/cni-ipam"
	snapshot "$DIR/host.before"
	echo "$NS" >"$DIR/ns"
	echo "$CG" >"$DIR/cgroup"
	# From here on a failure tears down what was made.
	trap up_failed EXIT

	# `ip netns add` makes /run/netns a mount point of its own when it is
	# not one yet; down undoes that when no namespace is left in it.
	if mountpoint -q /run/netns 2>/dev/null; then
		echo mounted >"$DIR/run-netns"
	elif [ -d /run/netns ]; then
		echo dir >"$DIR/run-netns"
	else
		echo absent >"$DIR/run-netns"
	fi
	ip netns add "$NS"
	ip -n "$NS" link set lo up
	ip -n "$NS" addr add "$NODE_IP/32" dev lo

	# The mount namespace: private /run, /var/lib and /var/log.
	nsenter --net="/run/netns/$NS" unshare --mount --propagation slave -- sh -c '
		mount -t tmpfs -o mode=755 tmpfs /run &&
		mount --bind "$1/var-lib" /var/lib &&
		mount --bind "$1/var-log" /var/log &&
		exec sleep 2147483647' holder "$DIR" >"$DIR/logs/holder.log" 2>&1 &
	echo "$!" >"$DIR/holder.pid"
	wait_for "mount namespace" 10 sh -c "grep -q ' /var/log ' /proc/$(cat "$DIR/holder.pid")/mountinfo"

	# Pods' cgroups: a root of the run's own in every v1 hierarchy.
	for h in /sys/fs/cgroup/*/; do
		[ -f "$h/cgroup.procs" ] || continue
		mkdir "$h$CG"
		if [ -f "$h/cpuset.cpus" ]; then
			cat "$h/cpuset.cpus" >"$h$CG/cpuset.cpus"
			cat "$h/cpuset.mems" >"$h$CG/cpuset.mems"
		fi
	done

	pki
	kubeconfig "$DIR/admin.kubeconfig" admin
	kubeconfig "$DIR/kubelet.kubeconfig" kubelet

	log "etcd"
	start etcd etcd --name perimeter --data-dir "$DIR/etcd" --unsafe-no-fsync \
		--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
		--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
		--initial-cluster perimeter=http://127.0.0.1:2380
	log "containerd"
	cat >"$DIR/containerd.toml" <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$DIR/containerd.sock"
[ttrpc]
  address = "$DIR/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "perimeter.local/pause:1"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$DIR/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni"
EOF
	cat >"$DIR/cni/10-perimeter.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "perimeter", "plugins": [
  {"type": "bridge", "bridge": "pk8s0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$DIR/cni-ipam"}}
]}
EOF
	start containerd containerd --config "$DIR/containerd.toml"
	images
	wait_for containerd 60 in_ns ctr -a "$DIR/containerd.sock" version
	in_ns ctr -a "$DIR/containerd.sock" -n k8s.io images import "$DIR/images/busybox.tar" >/dev/null
	in_ns ctr -a "$DIR/containerd.sock" -n k8s.io images import "$DIR/images/pause.tar" >/dev/null

	log "kube-apiserver"
	local p=$DIR/pki
	start kube-apiserver "$BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
		--bind-address=0.0.0.0 --secure-port=6443 --advertise-address="$NODE_IP" \
		--tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" --client-ca-file="$p/ca.crt" \
		--service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$p/sa.pub" \
		--service-account-signing-key-file="$p/sa.key" --service-cluster-ip-range="$SERVICE_CIDR" \
		--authorization-mode=Node,RBAC --kubelet-client-certificate="$p/apiserver-kubelet.crt" \
		--kubelet-client-key="$p/apiserver-kubelet.key" --kubelet-preferred-address-types=InternalIP,Hostname \
		--profiling=false
	wait_for kube-apiserver 300 in_ns "$BIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig" get --raw /readyz

	log "controller-manager, scheduler"
	start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$DIR/admin.kubeconfig" \
		--authentication-kubeconfig="$DIR/admin.kubeconfig" --authorization-kubeconfig="$DIR/admin.kubeconfig" \
		--leader-elect=false --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
		--use-service-account-credentials=false \
		--bind-address=127.0.0.1 --profiling=false
	start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$DIR/admin.kubeconfig" \
		--authentication-kubeconfig="$DIR/admin.kubeconfig" --authorization-kubeconfig="$DIR/admin.kubeconfig" \
		--leader-elect=false --bind-address=127.0.0.1 --profiling=false

	log "kubelet"
	for s in $SYSCTLS; do echo "$s=$(sysctl -n "$s")"; done >"$DIR/sysctls.saved"
	cat >"$DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /$CG
failSwapOn: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $DIR/pki/ca.crt}
authorization: {mode: AlwaysAllow}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 95
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%"}
resolvConf: /etc/resolv.conf
containerRuntimeEndpoint: unix://$DIR/containerd.sock
EOF
	start kubelet "$BIN/kubelet" --config="$DIR/kubelet.yaml" --kubeconfig="$DIR/kubelet.kubeconfig" \
		--node-ip="$NODE_IP" --hostname-override="$NODE_NAME" --root-dir="$DIR/kubelet"

	log "agent-sandbox controller"
	# create, not apply: the Sandbox CRD (a whole PodSpec schema) is larger
	# than apply's last-applied annotation may be.
	in_ns "$BIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig" create -f "$BIN/crds/" >/dev/null
	in_ns "$BIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig" wait --for=condition=Established --timeout=120s \
		crd/sandboxes.agents.x-k8s.io crd/sandboxclaims.extensions.agents.x-k8s.io \
		crd/sandboxtemplates.extensions.agents.x-k8s.io crd/sandboxwarmpools.extensions.agents.x-k8s.io >/dev/null
	start agent-sandbox env KUBECONFIG="$DIR/admin.kubeconfig" "$BIN/agent-sandbox-controller" \
		--leader-elect=false --extensions --metrics-bind-address=0 --health-probe-bind-address=0

	wait_for "node Ready" 300 in_ns "$BIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig" wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
	wait_for "default ServiceAccount" 120 in_ns "$BIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig" get serviceaccount default
	trap - EXIT
	echo "$DIR/admin.kubeconfig" >"$DIR/kubeconfig"
	log "cluster up: KUBECONFIG=$DIR/admin.kubeconfig, run clients with: $0 exec $DIR -- CMD"
}

stop_pid() { # stop_pid PID: TERM, then KILL after 10s
	local pid=$1 i=0
	kill -TERM "$pid" 2>/dev/null || return 0
	while kill -0 "$pid" 2>/dev/null; do
		i=$((i + 1))
		if [ $i -ge 50 ]; then kill -KILL "$pid" 2>/dev/null || true; fi
		[ $i -ge 100 ] && { log "process $pid did not end"; return 0; }
		sleep 0.2
	done
}

# cgroup_pids lists the processes in the run's cgroup tree.
cgroup_pids() {
	for h in /sys/fs/cgroup/*/; do
		[ -d "$h$CG" ] || continue
		find "$h$CG" -name cgroup.procs -exec cat {} + 2>/dev/null
	done | sort -u
}

# ns_pids lists the processes in the run's mount namespace (containerd, its
# shims), the holder excepted.
ns_pids() {
	local holder=$1 mnt
	mnt=$(readlink "/proc/$holder/ns/mnt" 2>/dev/null) || return 0
	for d in /proc/[0-9]*; do
		[ "$(readlink "$d/ns/mnt" 2>/dev/null)" = "$mnt" ] || continue
		[ "${d#/proc/}" = "$holder" ] || echo "${d#/proc/}"
	done
}

down() {
	need_root
	[ -n "${DIR:-}" ] && [ -f "$DIR/ns" ] || die "usage: cluster.sh down DIR (a DIR given to up)"
	NS=$(cat "$DIR/ns")
	CG=$(cat "$DIR/cgroup")
	local holder="" down_ticks
	# Now, in clock ticks since boot, as /proc/PID/stat gives start times.
	down_ticks=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%d", $1 * hz}' /proc/uptime)
	[ -f "$DIR/holder.pid" ] && holder=$(cat "$DIR/holder.pid")
	for n in agent-sandbox kube-scheduler kube-controller-manager kubelet kube-apiserver; do
		[ -f "$DIR/pids/$n" ] && stop_pid "$(cat "$DIR/pids/$n")"
	done
	# Pods' processes: everything in the run's cgroups.
	for _ in 1 2 3 4 5; do
		pids=$(cgroup_pids)
		[ -n "$pids" ] || break
		kill -KILL $pids 2>/dev/null || true
		sleep 0.2
	done
	[ -f "$DIR/pids/containerd" ] && stop_pid "$(cat "$DIR/pids/containerd")"
	if [ -n "$holder" ]; then
		for _ in 1 2 3 4 5; do
			pids=$(ns_pids "$holder")
			[ -n "$pids" ] || break
			kill -KILL $pids 2>/dev/null || true
			sleep 0.2
		done
	fi
	[ -f "$DIR/pids/etcd" ] && stop_pid "$(cat "$DIR/pids/etcd")"
	[ -n "$holder" ] && stop_pid "$holder"
	# Cgroups, deepest first.
	for h in /sys/fs/cgroup/*/; do
		[ -d "$h$CG" ] || continue
		find "$h$CG" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
	ip netns del "$NS" 2>/dev/null || true
	local rn
	rn=$(cat "$DIR/run-netns" 2>/dev/null || echo mounted)
	if [ "$rn" != mounted ] && [ -z "$(ip netns list 2>/dev/null)" ]; then
		while mountpoint -q /run/netns; do umount /run/netns || break; done
		if [ "$rn" = absent ]; then rmdir /run/netns 2>/dev/null || true; fi
	fi
	if [ -f "$DIR/sysctls.saved" ]; then
		while IFS='=' read -r k v; do sysctl -q -w "$k=$v" >/dev/null; done <"$DIR/sysctls.saved"
	fi
	# Verify.
	local bad=0
	snapshot "$DIR/host.after"
	if ! diff -u "$DIR/host.before" "$DIR/host.after" >"$DIR/host.diff"; then
		log "the host differs from before the cluster:"
		cat "$DIR/host.diff" >&2
		bad=1
	fi
	for h in /sys/fs/cgroup/*/; do
		if [ -d "$h$CG" ]; then log "cgroup $h$CG is left"; bad=1; fi
	done
	if grep -q -F "$DIR" /proc/self/mountinfo; then
		log "mounts under $DIR are left:"
		grep -F "$DIR" /proc/self/mountinfo >&2
		bad=1
	fi
	# A process counts as left only if it started before down did: by now
	# its pid may belong to a new process (ids wrap under load).
	for n in "$DIR"/pids/*; do
		[ -f "$n" ] || continue
		local p st
		p=$(cat "$n")
		st=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f20) || st=""
		if [ -n "$st" ] && [ "$st" -lt "$down_ticks" ]; then log "process $(basename "$n") ($p) is left"; bad=1; fi
	done
	# Kernel modules the run loaded (for the bridge, veth, overlayfs,
	# netfilter) stay loaded: another user of the host may need them by now.
	local mods
	mods=$(comm -13 "$DIR/host.before.modules" "$DIR/host.after.modules" | tr '\n' ' ') || true
	[ -z "$mods" ] || log "note: kernel modules loaded while the cluster ran (left loaded): $mods"
	[ $bad = 0 ] || die "teardown left the host changed (see above)"
	rm -f "$DIR/ns"
	log "cluster down; host settings restored and verified"
}

case "${1:-}" in
up)
	DIR=${2:-}
	up
	;;
down)
	DIR=${2:-}
	[ -n "$DIR" ] && DIR=$(cd "$DIR" && pwd)
	down
	;;
exec)
	DIR=$(cd "${2:?usage: cluster.sh exec DIR -- CMD...}" && pwd)
	shift 2
	[ "${1:-}" = "--" ] && shift
	NS=$(cat "$DIR/ns")
	exec ip netns exec "$NS" env KUBECONFIG="$DIR/admin.kubeconfig" "$@"
	;;
test)
	# What .ci/run calls: the provider's tests against a fresh cluster.
	DIR=$(mktemp -d /tmp/perimeter-k8s.XXXXXX)
	up
	rc=0
	(cd "$HERE/.." && ip netns exec "$NS" env PERIMETER_K8S_DIR="$DIR" KUBECONFIG="$DIR/admin.kubeconfig" \
		go test -race -count=1 ${GOTESTFLAGS:-} ./...) || rc=$?
	down || rc=1
	[ $rc = 0 ] && rm -rf "$DIR"
	exit $rc
	;;
*)
	sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
