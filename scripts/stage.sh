#!/usr/bin/env bash
# Run one `make demo` stage, record wall time and peak memory:  scripts/stage.sh TIMES_FILE NAME CMD [ARGS...]
# appends "NAME SECONDS MAX_RSS_MB" to TIMES_FILE and exits with the command's status (a failed stage is
# recorded too, as "NAME SECONDS MAX_RSS_MB failed"). MAX_RSS_MB is the peak resident memory of the stage's
# largest process (the kernel's ru_maxrss of the waited-for children, read by python3: MB = 10^6 bytes).
#   scripts/stage.sh --table TIMES_FILE   prints the recorded stages as a table: stage, wall time, peak RSS
# (lines from before the RSS column, "NAME SECONDS [failed]", print "-" there).
set -u
if [ "${1:-}" = "--table" ]; then
	[ -f "${2:?usage: stage.sh --table TIMES_FILE}" ] || exit 0
	awk '{ rss = "-"; flag = $3
		if ($3 ~ /^[0-9.]+$/) { rss = $3; flag = $4; if ($3 + 0 > peak) peak = $3 + 0 }
		t += $2; printf "  %-14s %9.1f s %9s MB%s\n", $1, $2, rss, (flag ? "  " flag : "") }
		END { printf "  %-14s %9.1f s %9s MB  (max)\n", "total", t, (peak ? peak : "-") }' "$2"
	exit 0
fi
times=${1:?usage: stage.sh TIMES_FILE NAME CMD [ARGS...]}
name=${2:?usage: stage.sh TIMES_FILE NAME CMD [ARGS...]}
shift 2
mkdir -p "$(dirname "$times")"
rss_file=$(mktemp)
start=$(date +%s.%N)
# python3 runs the command (stdin, stdout, stderr and signals as the shell's) and writes the children's
# peak resident memory to rss_file; the command's status passes through (128 + N for a signal N).
python3 -c '
import resource, subprocess, sys
try:
    code = subprocess.call(sys.argv[2:])
except OSError as err:  # not found, not executable: as the shell would say it
    print(f"stage.sh: {sys.argv[2]}: {err.strerror}", file=sys.stderr)
    code = 127
except KeyboardInterrupt:
    code = 130
with open(sys.argv[1], "w") as f:
    f.write(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e6:.0f}\n")
sys.exit(128 - code if code < 0 else code)
' "$rss_file" "$@"
status=$?
end=$(date +%s.%N)
seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
rss=$(cat "$rss_file" 2>/dev/null)
rm -f "$rss_file"
echo "$name $seconds ${rss:-0}$([ $status = 0 ] || echo ' failed')" >> "$times"
exit $status
