package sshbox

// The remote side is four POSIX sh scripts (with controlScript), sent with each request (nothing
// is installed on the remote host). They need sh, env, kill, grep with -z
// (GNU or BusyBox), mv, rm, sleep and date, and Linux's /proc.

// execScript runs one command: $1 is the sandbox root, $2 the directory, $3
// the descriptor for the header line (2, or 1 on a terminal), the rest the
// argv. It is started by "exec env VARS... /bin/sh -c", so its process ID is
// the SSH session's command, and it execs the argv in place. Before that it
// checks that it leads its own process group (OpenSSH starts each session
// with setsid) and prints one header line: "perimeter-pgid PID", or
// "perimeter-gone" (the sandbox is terminated) or "perimeter-nodir" (no
// such directory), then exits 125.
const execScript = `
if [ "$3" = 1 ]; then exec 3>&1; else exec 3>&2; fi
pgrp() { g=$3; }
if [ -r /proc/$$/stat ]; then
	read -r st < /proc/$$/stat
	pgrp ${st##*) }
	if [ "$g" != "$$" ]; then
		printf 'perimeter-error the command is not a process group leader\n' >&3
		exit 125
	fi
fi
[ -d "$1" ] || { printf 'perimeter-gone\n' >&3; exit 125; }
cd -- "$2" 2>/dev/null || { printf 'perimeter-nodir\n' >&3; exit 125; }
printf 'perimeter-pgid %s\n' "$$" >&3
exec 3>&-
shift 3
exec "$@"
`

// terminateScript terminates sandbox $2 under base $1: it moves the directory
// aside (so Get and List stop seeing it at once), kills every process whose
// environment carries PERIMETER_SANDBOX=$2 (and its process group) until none
// is left, removes the directory, and kills the sandbox's reaper. Running it
// again is harmless.
const terminateScript = `
base=$1 id=$2
gone="$base/.terminated-$id"
if [ -d "$base/$id" ]; then
	mv -- "$base/$id" "$gone" 2>/dev/null || [ -d "$gone" ] || exit 1
fi
killmarked() {
	for round in 1 2 3 4 5 6 7 8 9 10; do
		found=
		for f in $(grep -l -z -x -F "$1" /proc/[0-9]*/environ 2>/dev/null); do
			pid=${f#/proc/}; pid=${pid%/environ}
			[ "$pid" = "$$" ] && continue
			found=1
			kill -s KILL -- "-$pid" 2>/dev/null
			kill -s KILL "$pid" 2>/dev/null
		done
		[ -z "$found" ] && return 0
	done
}
killmarked "PERIMETER_SANDBOX=$id"
rm -rf -- "$gone"
killmarked "PERIMETER_REAPER=$id"
exit 0
`

// reaperScript starts, detached, a process that waits until $3 (seconds
// since the epoch, by the remote host's clock) and then runs terminateScript
// ($4) for sandbox $2 under base $1. While it waits it carries
// PERIMETER_REAPER=$2, so that Terminate can stop it; it drops the marker
// before it terminates the sandbox itself.
const reaperScript = `
env PERIMETER_REAPER="$2" /bin/sh -c 'trap "" HUP; d=$(( $3 - $(date +%s) )); [ "$d" -gt 0 ] && sleep "$d"; unset PERIMETER_REAPER; exec /bin/sh -c "$4" perimeter-ssh "$1" "$2"' perimeter-ssh "$1" "$2" "$3" "$4" </dev/null >/dev/null 2>&1 &
`
