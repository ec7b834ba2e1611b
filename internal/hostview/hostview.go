// Package hostview holds the shell fragment the providers' fakes use to give
// a sandbox's commands a read-only view of the test host's filesystem in a
// new mount namespace, so that the commands see the paths a real sandbox
// has and cannot write to (or read the temporary files of) the host.
package hostview

// Script builds the view at $NR: a tmpfs named $FSNAME holding each of the
// host's top-level directories bound read-only, symbolic links copied,
// and /proc, /dev and /sys bound recursively. /tmp is left empty to mount
// over, and so is the top-level directory named $OWN (the sandbox's own,
// such as "workspace"), which the caller creates and mounts. It runs with
// `set -e` in effect and PATH set by the caller.
const Script = `mount -t tmpfs -o mode=755 "$FSNAME" "$NR"
for d in /*; do
  n=${d#/}
  case "$n" in tmp|proc|dev|sys|lost+found|'*') continue;; esac
  if [ "$n" = "$OWN" ]; then continue; fi
  if [ -L "$d" ]; then ln -s "$(readlink "$d")" "$NR/$n"; continue; fi
  [ -d "$d" ] || continue
  mkdir "$NR/$n"
  mount --bind "$d" "$NR/$n"
  mount -o remount,bind,ro "$NR/$n" 2>/dev/null || true
done
mkdir -p "$NR/proc" "$NR/dev" "$NR/sys" "$NR/tmp"
mount --rbind /proc "$NR/proc"
mount --rbind /dev "$NR/dev"
mount --rbind /sys "$NR/sys"
`
