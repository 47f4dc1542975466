#!/usr/bin/env bash
# Run one `make demo` stage and record its wall time:  scripts/stage.sh TIMES_FILE NAME CMD [ARGS...]
# appends "NAME SECONDS" to TIMES_FILE and exits with the command's status (a failed stage is recorded too,
# as "NAME SECONDS failed").   scripts/stage.sh --table TIMES_FILE   prints the recorded stages as a table.
set -u
if [ "${1:-}" = "--table" ]; then
	[ -f "${2:?usage: stage.sh --table TIMES_FILE}" ] || exit 0
	awk '{ t += $2; printf "  %-14s %9.1f s%s\n", $1, $2, ($3 ? "  " $3 : "") }
		END { printf "  %-14s %9.1f s\n", "total", t }' "$2"
	exit 0
fi
times=${1:?usage: stage.sh TIMES_FILE NAME CMD [ARGS...]}
name=${2:?usage: stage.sh TIMES_FILE NAME CMD [ARGS...]}
shift 2
mkdir -p "$(dirname "$times")"
start=$(date +%s.%N)
"$@"
status=$?
end=$(date +%s.%N)
seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
echo "$name $seconds$([ $status = 0 ] || echo ' failed')" >> "$times"
exit $status
