#!/bin/sh
# counter: a minimal silo'd service. It adds one to a number in its STATE_DIRECTORY
# every COUNTER_INTERVAL seconds, so the count survives restarts and migrations.
# It listens on nothing and knows nothing of silo: run it by hand with
#   STATE_DIRECTORY=$(mktemp -d) ./bin/counter.sh
set -eu

: "${STATE_DIRECTORY:?STATE_DIRECTORY must name a writable directory}"
interval="${COUNTER_INTERVAL:-1}"
count_file="$STATE_DIRECTORY/count"

count=$(cat "$count_file" 2>/dev/null || echo 0)
case "$count" in '' | *[!0-9]*) echo "counter: ignoring unreadable $count_file" >&2; count=0 ;; esac

stopping=0
trap 'stopping=1' TERM INT

# Ready: the state is loaded. Tell the supervisor on fd 3 if it is open (notification_fd = 3).
{ echo ready >&3; } 2>/dev/null || true
echo "counter: starting at $count"

while [ "$stopping" = 0 ]; do
  # sleep in the background so that SIGTERM interrupts the wait at once.
  sleep "$interval" &
  wait $! || true
  [ "$stopping" = 0 ] || break
  count=$((count + 1))
  # Write-then-rename: a crash never leaves a half-written count.
  printf '%s\n' "$count" > "$count_file.tmp"
  mv "$count_file.tmp" "$count_file"
  echo "counter: $count"
done

kill "$!" 2>/dev/null || true
echo "counter: stopping at $count"
exit 0
