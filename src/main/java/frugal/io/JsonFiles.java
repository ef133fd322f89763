package frugal.io;

import com.fasterxml.jackson.core.JacksonException;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import frugal.FrugalException;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;

/** Reads JSON files (model configs, run state) with errors that name the file. */
public final class JsonFiles {
    /**
     * Strict on purpose: a duplicated key or trailing garbage means the file is not what its writer meant,
     * so it is rejected rather than silently half-read.
     */
    static final ObjectMapper MAPPER = new ObjectMapper()
            .enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

    private JsonFiles() {
    }

    /** The file's JSON value; a FrugalException naming the file if it is missing, unreadable or not JSON. */
    public static JsonNode read(Path file) {
        byte[] bytes;
        try {
            bytes = Files.readAllBytes(file);
        } catch (NoSuchFileException e) {
            throw new FrugalException(file + ": file not found", e);
        } catch (IOException e) {
            throw new FrugalException(file + ": cannot read file: " + AtomicFile.describe(e), e);
        }
        return parse(file.toString(), bytes);
    }

    /** Parses JSON bytes; {@code source} names where they came from in the error message. */
    public static JsonNode parse(String source, byte[] bytes) {
        try {
            JsonNode node = MAPPER.readTree(bytes);
            if (node == null || node.isMissingNode()) throw new FrugalException(source + ": empty JSON");
            return node;
        } catch (JacksonException e) {
            throw new FrugalException(source + ": invalid JSON: " + e.getOriginalMessage(), e);
        } catch (IOException e) {
            throw new FrugalException(source + ": cannot parse JSON: " + AtomicFile.describe(e), e);
        }
    }
}
