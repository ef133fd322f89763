#!/usr/bin/env bash
# Here, before a device call: fills the ignored folder .gpu-cuda/ that bench/cuda/device-run.sh reads there (the jar
# without XChart's PDF libraries, the test classes, the JUnit console launcher, the scripts, the DSQ experiment's
# tokens xz-compressed) and builds the Java runtime .gpu-jre/ once. Then:
#   run(command="bash .gpu-cuda/device-run.sh SECTIONS...", carry=[".gpu-jre", ".gpu-cuda"])
set -euo pipefail
cd "$(dirname "$0")/../.."
export JAVA_HOME=${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}
G=.gpu-cuda
JUNIT=junit-platform-console-standalone-1.11.4.jar
[ -x .gpu-jre/bin/java ] || ../shared/tools/gpu-jre.sh .gpu-jre
mvn -q -B package -DskipTests
jar=~/.m2/repository/org/junit/platform/junit-platform-console-standalone/1.11.4/$JUNIT
[ -f "$jar" ] || mvn -q dependency:get -Dartifact=org.junit.platform:junit-platform-console-standalone:1.11.4
mkdir -p $G/data
cp target/frugal.jar $G/frugal.jar
zip -q -d $G/frugal.jar 'org/apache/pdfbox/*' 'org/apache/fontbox/*' 'de/rototor/*' 'de/erichseifert/*' || true
rm -rf $G/test-classes && cp -r target/test-classes $G/test-classes
rm -rf $G/test-classes/fixtures $G/test-classes/*.txt # src/test/resources travels with the tree
cp "$jar" bench/cuda/device-run.sh bench/cuda/ncu_step.py bench/gpt2_torch.py $G/
tokens=$G/data/jdk-8mb-gpt2.tokens.xz
if [ ! -f $tokens ]; then # the first 8 MB of the JDK's sources as GPT-2 BPE tokens, as DsqExperiment trains on them
  cache=$(mktemp -d)
  FRUGAL_CACHE=$cache "$JAVA_HOME/bin/java" --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED \
    -jar target/frugal.jar train --preset tiny --tokenizer gpt2 --steps 1 --max-bytes 8000000 --out "$cache/run" > /dev/null 2>&1
  xz -9 -c "$cache"/tokens/*.tokens > $tokens
  rm -rf "$cache"
fi
du -sh .gpu-jre $G
