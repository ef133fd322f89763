package frugal.train;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Random;
import java.util.Set;
import java.util.stream.Collectors;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** metrics.jsonl: one JSON object per step, in order, with the fields a plot or a resumed run needs. */
class MetricsTest {
    private static final int STEPS = 7, EVAL_INTERVAL = 3, WARMUP = 2;
    private static final float LR = 3e-3f;

    @TempDir
    Path dir;

    @Test
    void oneWellFormedRecordPerStep() throws IOException {
        long seed = new Random().nextLong();
        Path corpus = TrainFixtures.corpus(dir, new Random(seed), 3000), out = dir.resolve("run");
        String[] args = {"--config", TrainFixtures.config(dir).toString(), "--tokenizer", "byte", "--data", corpus.toString(),
                "-b", "2", "-t", "16", "-n", Integer.toString(STEPS), "--warmup", Integer.toString(WARMUP),
                "--lr", Float.toString(LR), "--eval-interval", Integer.toString(EVAL_INTERVAL), "--seed", Long.toString(seed),
                "-o", out.toString()};
        TrainFixtures.train(args);
        TrainFixtures.train(args); // a fresh run into the same folder starts the file over

        List<String> lines = Files.readAllLines(out.resolve("metrics.jsonl"));
        assertEquals(STEPS, lines.size(), "seed " + seed + ": one line per step");
        LrSchedule schedule = new LrSchedule(LR, LR * TrainSettings.DEFAULT_MIN_LR_RATIO, WARMUP, STEPS);
        List<JsonNode> records = TrainFixtures.metrics(out.resolve("metrics.jsonl"));
        for (int i = 0; i < STEPS; i++) {
            JsonNode r = records.get(i);
            int step = i + 1;
            String where = "seed " + seed + ", line " + step + ": " + lines.get(i);
            assertTrue(r.isObject(), where);
            boolean evaluated = step % EVAL_INTERVAL == 0 || step == STEPS;
            Set<String> expected = evaluated ? Set.of("step", "loss", "lr", "grad_norm", "tokens_per_s", "ms", "val_loss")
                    : Set.of("step", "loss", "lr", "grad_norm", "tokens_per_s", "ms");
            Set<String> names = fieldNames(r);
            assertTrue(names.containsAll(expected), where + ": missing " + expected);
            // Beyond the training fields, only the stash ledger's (DSQ) fields may appear.
            for (String name : names) {
                assertTrue(expected.contains(name) || name.startsWith("stash_") || name.startsWith("traffic_")
                        || name.startsWith("bit_ops_") || name.equals("peak_memory_bytes"), where + ": unexpected field " + name);
            }
            // The backend's count of what it allocated: at least the step's F32 logits, and never falling.
            long peak = r.get("peak_memory_bytes").asLong();
            assertTrue(peak >= 2 * 16 * 257 * 4, where);
            if (step > 1) assertTrue(peak >= records.get(i - 1).get("peak_memory_bytes").asLong(), where);
            assertEquals(step, r.get("step").asInt(), where);
            assertEquals(schedule.at(step), r.get("lr").floatValue(), where);
            assertTrue(r.get("loss").asDouble() > 0 && Double.isFinite(r.get("loss").asDouble()), where);
            assertTrue(r.get("grad_norm").asDouble() > 0, where);
            assertTrue(r.get("tokens_per_s").asDouble() > 0 && r.get("ms").asDouble() > 0, where);
            if (evaluated) assertTrue(r.get("val_loss").asDouble() > 0, where);
            // Every op's traffic: at least the F32 logits written by the head's GEMM and read by the loss (257 per
            // token), and the same op set, so the same bytes, every step after the first (which also converts the
            // compute copies of the weights).
            double traffic = r.get("traffic_all_ops_bytes_per_token").asDouble();
            assertTrue(traffic >= 2 * 257 * 4, where);
            if (step > 1) assertEquals(records.get(1).get("traffic_all_ops_bytes_per_token").asDouble(), traffic, where);
        }
        // Small random weights give near-uniform predictions over the 257 byte tokens.
        assertEquals(Math.log(257), records.getFirst().get("loss").asDouble(), 0.3, "seed " + seed + ": the first loss");
        try (Stream<Path> files = Files.list(out)) {
            assertEquals(Set.of(Checkpoint.FILE, "metrics.jsonl", "model"),
                    files.map(p -> p.getFileName().toString()).collect(Collectors.toSet()), "no temporary files left behind");
        }
    }

    private static Set<String> fieldNames(JsonNode record) {
        Set<String> names = new java.util.HashSet<>();
        record.fieldNames().forEachRemaining(names::add);
        return names;
    }
}
