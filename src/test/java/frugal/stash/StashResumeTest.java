package frugal.stash;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import frugal.train.StashOptions;
import frugal.train.TrainOptions;
import frugal.train.Trainer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A run with a loss-plateau DSQ schedule, stopped at a checkpoint and resumed (without repeating the stash flags),
 * continues the schedule and the losses exactly as an uninterrupted run. The learning rate is constant, so that a
 * shorter first run follows the same rate as the long one.
 */
class StashResumeTest {
    private static final String POLICY = """
            q0 = bfp8
            q1 = bfp2/32/sr, bfp3/32/sr, bfp4/32/sr
            q2 = bfp2/32/sr, bfp3/32/sr, bfp4/32/sr
            q3 = bfp8
            trigger = plateau 2 0.2
            """;

    @Test
    void resumedRunContinuesTheScheduleExactly(@TempDir Path dir) throws IOException {
        Random rng = new Random();
        StringBuilder text = new StringBuilder();
        for (int i = 0; i < 3000; i++) text.append("the quick brown fox ").append(rng.nextInt(100)).append(i % 7 == 0 ? ".\n" : " ");
        Path data = Files.writeString(dir.resolve("corpus.txt"), text);
        Path policy = Files.writeString(dir.resolve("dsq.conf"), POLICY);
        int total = 10, cut = 4 + rng.nextInt(4);
        List<JsonNode> straight = train(dir.resolve("straight"), data, policy, total, false);
        train(dir.resolve("resumed"), data, policy, cut, false);
        List<JsonNode> resumed = train(dir.resolve("resumed"), data, null, total, true);
        assertEquals(total, straight.size());
        assertEquals(total, resumed.size());
        assertTrue(straight.get(total - 1).get("stash_stage").asInt() > 0, "the schedule never rose: " + straight);
        for (int i = 0; i < total; i++) {
            String where = "step " + (i + 1) + " (cut after " + cut + ")";
            assertEquals(straight.get(i).get("stash_stage").asInt(), resumed.get(i).get("stash_stage").asInt(), where);
            assertEquals(straight.get(i).get("loss").asDouble(), resumed.get(i).get("loss").asDouble(), where);
            assertEquals(straight.get(i).get("stash_peak_bytes").asLong(), resumed.get(i).get("stash_peak_bytes").asLong(), where);
        }
    }

    private static List<JsonNode> train(Path out, Path data, Path policy, int steps, boolean resume) throws IOException {
        TrainOptions o = new TrainOptions("tiny", null, null, data, "byte", 0L, 2, 16, steps, 1, 1e-3f, 1f, 0, 0.1f, 1f,
                1000, 1, 3L, out, resume, 1000, null, 0, "cpu", false);
        new Trainer(o, new PrintStream(new ByteArrayOutputStream())).withStash(new StashOptions("keep", policy)).run();
        ObjectMapper json = new ObjectMapper();
        return Files.readAllLines(out.resolve("metrics.jsonl")).stream().map(l -> {
            try {
                return json.readTree(l);
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
        }).toList();
    }
}
