package frugal.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import frugal.FrugalException;
import frugal.io.AtomicFile;

import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/** One JSON object per line per step (metrics.jsonl), flushed as written so a killed run keeps its history. */
public final class Metrics implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();
    private final Path file;
    private final BufferedWriter out;

    /**
     * Opens {@code file} keeping the records of steps up to {@code keepThroughStep} (0 for a fresh run). A resumed
     * run passes its checkpoint's step: records a killed process wrote after its last checkpoint are dropped, so
     * the file holds each step once, as an uninterrupted run would.
     */
    public Metrics(Path file, int keepThroughStep) {
        this.file = file;
        try {
            Files.createDirectories(file.toAbsolutePath().getParent());
            if (keepThroughStep > 0 && Files.exists(file)) keepThrough(keepThroughStep);
            out = Files.newBufferedWriter(file, StandardCharsets.UTF_8, StandardOpenOption.CREATE,
                    keepThroughStep > 0 ? StandardOpenOption.APPEND : StandardOpenOption.TRUNCATE_EXISTING, StandardOpenOption.WRITE);
        } catch (IOException e) {
            throw new FrugalException(file + ": cannot write metrics: " + AtomicFile.describe(e), e);
        }
    }

    private void keepThrough(int step) throws IOException {
        StringBuilder kept = new StringBuilder();
        for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
            if (stepOf(line) <= step) kept.append(line).append('\n');
        }
        byte[] bytes = kept.toString().getBytes(StandardCharsets.UTF_8);
        AtomicFile.write(file, channel -> {
            ByteBuffer buffer = ByteBuffer.wrap(bytes);
            while (buffer.hasRemaining()) channel.write(buffer);
        });
    }

    /** The step of a record; a line cut short by a crash, or not a record, counts as after every step. */
    private static long stepOf(String line) {
        try {
            JsonNode step = JSON.readTree(line).get("step");
            return step != null && step.canConvertToLong() ? step.asLong() : Long.MAX_VALUE;
        } catch (IOException e) {
            return Long.MAX_VALUE;
        }
    }

    public ObjectNode record() {
        return JSON.createObjectNode();
    }

    public void write(ObjectNode record) {
        try {
            out.write(record.toString());
            out.newLine();
            out.flush();
        } catch (IOException e) {
            throw new FrugalException(file + ": cannot write metrics: " + AtomicFile.describe(e), e);
        }
    }

    @Override
    public void close() {
        try {
            out.close();
        } catch (IOException e) {
            throw new FrugalException(file + ": cannot close: " + AtomicFile.describe(e), e);
        }
    }
}
