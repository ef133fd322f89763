package frugal.train;

import com.fasterxml.jackson.databind.JsonNode;
import frugal.io.Safetensors;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import java.util.Random;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * A run interrupted and resumed with {@code --resume} computes exactly what an uninterrupted one does: every
 * step's loss, learning rate and gradient norm, and the final weights and optimizer state, bit for bit.
 */
class ResumeTest {
    private static final int STEPS = 12, WARMUP = 5;

    @TempDir
    Path dir;

    @ParameterizedTest(name = "accumulation {0}, interrupted after step {1}")
    @CsvSource({
            "1, 3", // in the middle of the warmup
            "2, 8"  // accumulating, during the cosine decay; the resumed part starts a new epoch of the data
    })
    void resumedRunMatchesUninterruptedBitForBit(int accumulation, int stopAfter) throws IOException {
        long seed = new Random().nextLong();
        // 1,500 bytes: about 80 training windows of 17 bytes, so 12 steps of 2 × 4 windows wrap around the data.
        Path corpus = TrainFixtures.corpus(dir, new Random(seed), 1500);
        List<String> settings = List.of("--config", TrainFixtures.config(dir).toString(), "--tokenizer", "byte",
                "--data", corpus.toString(), "-b", "4", "-t", "16", "-n", Integer.toString(STEPS),
                "--warmup", Integer.toString(WARMUP), "--accumulation", Integer.toString(accumulation), "--lr", "3e-3",
                "--eval-interval", "4", "--seed", Long.toString(seed));
        Path whole = dir.resolve("whole"), parts = dir.resolve("parts");
        TrainFixtures.train(with(settings, "-o", whole.toString(), "--checkpoint-interval", "5"));
        TrainFixtures.train(with(settings, "-o", parts.toString(), "--stop-after", Integer.toString(stopAfter)));

        // As if the process had gone on past its checkpoint and been killed mid-write: the resumed run drops both.
        List<String> wholeLines = Files.readAllLines(whole.resolve("metrics.jsonl"));
        Files.writeString(parts.resolve("metrics.jsonl"), wholeLines.get(stopAfter) + "\n{\"step\":" + (stopAfter + 2) + ",\"lo",
                StandardCharsets.UTF_8, StandardOpenOption.APPEND);
        // Nothing but --resume: the settings come from the checkpoint.
        TrainFixtures.train("--resume", "-o", parts.toString());

        List<JsonNode> expected = TrainFixtures.metrics(whole.resolve("metrics.jsonl"));
        List<JsonNode> actual = TrainFixtures.metrics(parts.resolve("metrics.jsonl"));
        assertEquals(IntStream.rangeClosed(1, STEPS).boxed().toList(), actual.stream().map(r -> r.get("step").asInt()).toList(),
                "seed " + seed + ": one record per step");
        for (int i = 0; i < STEPS; i++) {
            String where = "seed " + seed + ", step " + (i + 1);
            for (String field : List.of("loss", "lr", "grad_norm")) {
                assertEquals(Double.doubleToLongBits(expected.get(i).get(field).asDouble()),
                        Double.doubleToLongBits(actual.get(i).get(field).asDouble()), where + ": " + field);
            }
        }
        assertEquals(Double.doubleToLongBits(expected.getLast().get("val_loss").asDouble()),
                Double.doubleToLongBits(actual.getLast().get("val_loss").asDouble()), "seed " + seed + ": final validation loss");
        assertSameCheckpoint(whole.resolve(Checkpoint.FILE), parts.resolve(Checkpoint.FILE), "seed " + seed);
    }

    /** Same weights and optimizer moments bit for bit, same step and data position. */
    private static void assertSameCheckpoint(Path expectedFile, Path actualFile, String where) {
        try (Safetensors expected = Safetensors.open(expectedFile); Safetensors actual = Safetensors.open(actualFile)) {
            assertEquals(expected.names(), actual.names(), where);
            for (String name : expected.names()) {
                // assertArrayEquals on floats compares bit patterns (Float.floatToIntBits).
                assertArrayEquals(expected.readFloats(name), actual.readFloats(name), where + ": " + name);
            }
            Checkpoint.Loaded e = Checkpoint.read(expectedFile), a = Checkpoint.read(actualFile);
            assertEquals(STEPS, a.step(), where);
            assertEquals(e.state(), a.state(), where + ": settings and data position");
        }
    }

    private static String[] with(List<String> settings, String... more) {
        return java.util.stream.Stream.concat(settings.stream(), java.util.Arrays.stream(more)).toArray(String[]::new);
    }
}
