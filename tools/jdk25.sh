# Sourced by ./frugal and ./run-tests: points JAVA_HOME at a JDK 25+ (the machine's default java may be 17).
# Written to be safe under `set -euo pipefail`: globs that match nothing must not abort the caller.
jdk25_ok() { [ -x "$1/bin/java" ] && "$1/bin/java" -version 2>&1 | grep -qE 'version "(2[5-9]|[3-9][0-9])'; }
if [ -z "${JAVA_HOME:-}" ] || ! jdk25_ok "$JAVA_HOME"; then
  JAVA_HOME=""
  for candidate in /usr/lib/jvm/*; do
    if jdk25_ok "$candidate"; then JAVA_HOME=$candidate; break; fi
  done
fi
if [ -z "$JAVA_HOME" ]; then
  echo "frugal needs JDK 25 or newer: set JAVA_HOME or install one under /usr/lib/jvm" >&2
  exit 1
fi
export JAVA_HOME
