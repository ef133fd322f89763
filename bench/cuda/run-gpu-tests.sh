#!/usr/bin/env bash
# CUDA backend tests on the GPU machine (which has no Java and no Maven).
#
#   bench/cuda/run-gpu-tests.sh prepare   # here: builds .gpu-jre (once), the jar and the test classes into .gpu-build
#   bench/cuda/run-gpu-tests.sh run       # there (device tool, carry .gpu-jre and .gpu-build): runs CudaBackendTest
#
# The device call:  run(command="bash bench/cuda/run-gpu-tests.sh run", carry=[".gpu-jre", ".gpu-build"], timeout_s=300)
# Both folders are listed in .git/info/exclude. Extra arguments to `run` go to the JUnit console launcher
# (for instance --select-method frugal.backend.cuda.CudaBackendTest#attention).
set -euo pipefail
cd "$(dirname "$0")/../.."
JUNIT=junit-platform-console-standalone-1.11.4.jar
case "${1:-}" in
  prepare)
    export JAVA_HOME=${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}
    [ -x .gpu-jre/bin/java ] || ../shared/tools/gpu-jre.sh .gpu-jre || /work/shared/tools/gpu-jre.sh .gpu-jre
    mvn -q -o package -DskipTests   # also compiles the tests
    jar=~/.m2/repository/org/junit/platform/junit-platform-console-standalone/1.11.4/$JUNIT
    [ -f "$jar" ] || mvn -q dependency:get -Dartifact=org.junit.platform:junit-platform-console-standalone:1.11.4
    rm -rf .gpu-build && mkdir -p .gpu-build
    cp target/frugal.jar "$jar" .gpu-build/
    cp -r target/test-classes .gpu-build/test-classes
    du -sh .gpu-jre .gpu-build
    ;;
  run)
    shift
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    .gpu-jre/bin/java --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -XX:-UseProfiledLoopPredicate -Xmx16g \
      -jar .gpu-build/$JUNIT execute --disable-banner --details=tree \
      -cp .gpu-build/frugal.jar:.gpu-build/test-classes --select-class frugal.backend.cuda.CudaBackendTest "$@"
    ;;
  *)
    echo "usage: $0 prepare|run [junit options]" >&2
    exit 2
    ;;
esac
