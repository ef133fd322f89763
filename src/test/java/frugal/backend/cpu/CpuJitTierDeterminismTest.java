package frugal.backend.cpu;

import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Resuming training from a checkpoint reproduces the uninterrupted run only if every op gives the same bits for the
 * same inputs: run after run, across threads, and whichever JIT tier runs it (the resumed JVM starts cold, the run it
 * resumes was long compiled by C2).
 */
class CpuJitTierDeterminismTest {
    /**
     * Small rounds of the workload that get every kernel compiled by C2 first: it wants ≥ 600 calls of a method and,
     * with its loops' iterations, ≥ 15000 in all (HotSpot's Tier4 thresholds).
     */
    private static final int WARM_UP = 1000;
    /** A line of {@link OpsWorkload#main}: op=fingerprint. */
    private static final Pattern FINGERPRINT = Pattern.compile("(?m)^([A-Za-z ]+)=(-?\\d+)$");

    @Test
    void everyOpGivesTheSameBitsTwice() {
        long seed = System.nanoTime();
        assertEquals(OpsWorkload.run(seed, OpsWorkload.THREADED), OpsWorkload.run(seed, OpsWorkload.THREADED), "seed " + seed);
    }

    @Test
    void bitsDoNotDependOnTheJitTier() throws IOException, InterruptedException {
        long seed = System.nanoTime();
        // C1 alone never intrinsifies the Vector API: the code a freshly started JVM runs first
        Process cold = startOtherJvm(seed, 0, "-XX:TieredStopAtLevel=1");
        // the kernels' compilations block, so that after the warm-up every kernel runs C2's code
        Process warm = startOtherJvm(seed, WARM_UP, "-XX:CompileCommand=BackgroundCompilation,frugal.backend.cpu.*::*,false");
        Map<String, Integer> coldBits = resultsOf(cold), warmBits = resultsOf(warm);
        assertEquals(warmBits.keySet(), coldBits.keySet());
        List<String> differ = warmBits.keySet().stream().filter(op -> !warmBits.get(op).equals(coldBits.get(op))).toList();
        assertTrue(differ.isEmpty(), "C2-compiled and C1-compiled results differ for " + differ + " (seed " + seed + ")");
    }

    private static Process startOtherJvm(long seed, int warmUp, String jitOption) throws IOException {
        return new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "--add-modules", "jdk.incubator.vector", "-XX:CompileCommand=quiet", jitOption, "-Xmx1g",
                "-Dfrugal.threads=" + Parallel.THREADS, // the same chunks in both, so only the JIT tier differs
                "-cp", System.getProperty("java.class.path"), OpsWorkload.class.getName(), Long.toString(seed),
                Integer.toString(warmUp))
                .redirectErrorStream(true).start();
    }

    /** The op=fingerprint lines the other JVM printed (its output fits a pipe's buffer, so waiting first is safe). */
    private static Map<String, Integer> resultsOf(Process p) throws IOException, InterruptedException {
        if (!p.waitFor(120, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            fail("the other JVM did not finish in 120 s");
        }
        String output = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(0, p.exitValue(), "the other JVM failed; it printed:\n" + output);
        Map<String, Integer> bits = new LinkedHashMap<>();
        Matcher line = FINGERPRINT.matcher(output); // among the JVM's own warnings
        while (line.find()) bits.put(line.group(1), Integer.parseInt(line.group(2)));
        return bits;
    }
}
