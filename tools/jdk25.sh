# Sourced by ./frugal and ./run-tests: points JAVA_HOME at a JDK 25+ (the machine's default java may be 17).
if [ -z "${JAVA_HOME:-}" ] || ! "$JAVA_HOME/bin/java" -version 2>&1 | grep -qE 'version "(2[5-9]|[3-9][0-9])'; then
  JAVA_HOME=$(ls -d /usr/lib/jvm/*25* /usr/lib/jvm/*-2[6-9]* 2>/dev/null | head -1)
fi
if [ -z "$JAVA_HOME" ] || [ ! -x "$JAVA_HOME/bin/java" ]; then
  echo "frugal needs JDK 25 or newer: set JAVA_HOME or install one under /usr/lib/jvm" >&2
  exit 1
fi
export JAVA_HOME
