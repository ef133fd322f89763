package frugal.train;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import frugal.FrugalException;
import frugal.io.AtomicFile;

import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/** One JSON object per line per step (metrics.jsonl), flushed as written so a killed run keeps its history. */
public final class Metrics implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();
    private final Path file;
    private final BufferedWriter out;

    public Metrics(Path file, boolean append) {
        this.file = file;
        try {
            Files.createDirectories(file.toAbsolutePath().getParent());
            out = Files.newBufferedWriter(file, StandardCharsets.UTF_8, StandardOpenOption.CREATE,
                    append ? StandardOpenOption.APPEND : StandardOpenOption.TRUNCATE_EXISTING, StandardOpenOption.WRITE);
        } catch (IOException e) {
            throw new FrugalException(file + ": cannot write metrics: " + AtomicFile.describe(e), e);
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
