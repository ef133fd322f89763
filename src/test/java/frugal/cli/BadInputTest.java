package frugal.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import frugal.model.ModelFiles;
import frugal.train.Checkpoint;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.function.Consumer;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

/**
 * Bad input through the real command line: every case must end with exit code 1 and one line
 * "frugal: <file or step>: <problem>" on stderr, no stack trace, and an existing checkpoint byte for byte as it was.
 * Models are copies of the gpt2-tiny fixture (vocabulary 512, 64 positions), damaged per test; training uses the
 * byte tokenizer, batch 2 × 16 and a few steps.
 */
class BadInputTest {
    private static final Path FIXTURE = Path.of("src/test/resources/fixtures/gpt2-tiny");
    private static final ObjectMapper JSON = new ObjectMapper();

    /** A corpus and a run of two steps with a checkpoint at each, made once and copied by the tests that need it. */
    @TempDir
    static Path shared;
    private static Path corpus;
    private static Path trainedRun;

    @TempDir
    Path tmp;
    private final Random random = new Random();
    private String savedCacheProperty;

    /** What one command line printed and returned. */
    record Outcome(int exitCode, String out, String err) {
    }

    @BeforeAll
    static void trainOnce() throws IOException {
        System.setProperty("frugal.cache", shared.resolve("cache").toString());
        try {
            corpus = shared.resolve("corpus.txt");
            Random words = new Random(7);
            String[] vocabulary = {"the", "model", "reads", "a", "file", "and", "writes", "its", "weights", "to", "disk"};
            StringBuilder text = new StringBuilder();
            while (text.length() < 20_000) text.append(vocabulary[words.nextInt(vocabulary.length)]).append(' ');
            Files.writeString(corpus, text);
            trainedRun = shared.resolve("run");
            Outcome o = frugal(train(copyModel(shared.resolve("model")), corpus, trainedRun, "--steps", "2"));
            assertEquals(0, o.exitCode(), o.err());
            assertTrue(Files.isRegularFile(trainedRun.resolve(Checkpoint.FILE)));
        } finally {
            System.clearProperty("frugal.cache");
        }
    }

    @BeforeEach
    void isolateTokenCache() {
        savedCacheProperty = System.getProperty("frugal.cache");
        System.setProperty("frugal.cache", tmp.resolve("cache").toString());
    }

    @AfterEach
    void restoreTokenCache() {
        if (savedCacheProperty == null) System.clearProperty("frugal.cache");
        else System.setProperty("frugal.cache", savedCacheProperty);
    }

    // ---------------------------------------------------------------- missing and unreadable files

    @Test
    void missingModelFolder() {
        Path missing = tmp.resolve("no-such-model");
        assertFails(eval(missing), missing + ": no such model folder or checkpoint");
    }

    @Test
    void missingConfig() throws IOException {
        Path model = model();
        Files.delete(model.resolve(ModelFiles.CONFIG));
        assertFails(eval(model), model.resolve(ModelFiles.CONFIG) + ": file not found");
    }

    @Test
    void missingWeights() throws IOException {
        Path model = model();
        Files.delete(model.resolve(ModelFiles.WEIGHTS));
        assertFails(eval(model), model.resolve(ModelFiles.WEIGHTS) + ": file not found");
    }

    @Test
    void foldersWhereFilesBelong() throws IOException {
        Path model = model();
        Files.delete(model.resolve(ModelFiles.WEIGHTS));
        Files.createDirectory(model.resolve(ModelFiles.WEIGHTS));
        assertFails(eval(model), model.resolve(ModelFiles.WEIGHTS) + ": is a directory");
        Files.delete(model.resolve(ModelFiles.CONFIG));
        Files.createDirectory(model.resolve(ModelFiles.CONFIG));
        assertFails(eval(model), model.resolve(ModelFiles.CONFIG) + ": cannot read file");
    }

    @Test
    void unreadableWeights() throws IOException {
        Path model = model(), weights = model.resolve(ModelFiles.WEIGHTS);
        Files.setPosixFilePermissions(weights, PosixFilePermissions.fromString("---------"));
        assumeFalse(Files.isReadable(weights), "permissions do not stop this user (root) from reading");
        assertFails(eval(model), weights + ": cannot read file: AccessDeniedException");
    }

    @Test
    void missingCorpus() throws IOException {
        Path missing = tmp.resolve("no-such-corpus.txt");
        assertFails(eval(model(), missing), missing + ": no such file or folder");
        assertFails(frugal(train(model(), missing, tmp.resolve("run"))), missing + ": no such file or folder");
    }

    // ---------------------------------------------------------------- truncated and forged safetensors

    @Test
    void weightsCutInsideTheHeader() throws IOException {
        Path model = model(), weights = model.resolve(ModelFiles.WEIGHTS);
        truncate(weights, 8 + random.nextInt((int) headerLength(weights)));
        assertFails(eval(model), weights + ": header length", "file truncated?");
    }

    @Test
    void weightsCutInsideTheData() throws IOException {
        Path model = model(), weights = model.resolve(ModelFiles.WEIGHTS);
        long dataStart = 8 + headerLength(weights);
        truncate(weights, dataStart + random.nextLong(Files.size(weights) - dataStart));
        assertFails(eval(model), weights + ": tensor ", "reach past the data area", "file truncated?");
    }

    @Test
    void weightsCutBeforeTheHeaderLength() throws IOException {
        Path model = model(), weights = model.resolve(ModelFiles.WEIGHTS);
        truncate(weights, random.nextInt(8));
        assertFails(eval(model), weights + ": file is ", "too short for a safetensors header");
    }

    @Test
    void headerLengthLargerThanTheFile() throws IOException {
        Path model = model(), weights = model.resolve(ModelFiles.WEIGHTS);
        byte[] bytes = Files.readAllBytes(weights);
        ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).putLong(0, bytes.length + random.nextInt(1 << 20));
        Files.write(weights, bytes);
        assertFails(eval(model), weights + ": header length", "exceeds the " + (bytes.length - 8) + " bytes");
    }

    @Test
    void headerThatIsNotJson() throws IOException {
        Path model = model(), weights = model.resolve(ModelFiles.WEIGHTS);
        byte[] bytes = Files.readAllBytes(weights);
        bytes[8] = '#'; // where the opening brace was
        Files.write(weights, bytes);
        assertFails(eval(model), weights + ": safetensors header: invalid JSON");
    }

    @Test
    void overlappingTensors() throws IOException {
        Path model = model(), weights = model.resolve(ModelFiles.WEIGHTS);
        // ln_1.weight follows ln_1.bias (256 bytes); moved back by up to that much, it overlaps it.
        editHeader(weights, h -> shift(h, "transformer.h.0.ln_1.weight", -4 * (1 + random.nextInt(64))));
        assertFails(eval(model), weights + ": tensors transformer.h.0.ln_1.bias [66560, 66816) and transformer.h.0.ln_1.weight", "overlap");
    }

    @Test
    void offsetsPastTheEnd() throws IOException {
        Path model = model(), weights = model.resolve(ModelFiles.WEIGHTS);
        editHeader(weights, h -> shift(h, "transformer.wte.weight", 4 * (1 + random.nextInt(1000))));
        assertFails(eval(model), weights + ": tensor transformer.wte.weight: data_offsets", "reach past the data area");
    }

    /** wpe is F32 [64, 64]; each forged entry still spans its bytes exactly, so only the named problem remains. */
    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
            "dtype | \"Q4_K\"  | : unknown dtype \"Q4_K\"",
            "dtype | \"I32\"   | is I32, expected a floating-point dtype",
            "shape | [32, 128] | has shape [32, 128] but the config implies [64, 64]"})
    void forgedTensorEntry(String field, String json, String problem) throws IOException {
        Path model = model(), weights = model.resolve(ModelFiles.WEIGHTS);
        editHeader(weights, h -> ((ObjectNode) h.get("transformer.wpe.weight")).set(field, parse(json)));
        assertFails(eval(model), weights + ": tensor transformer.wpe.weight", problem);
    }

    @Test
    void nonFiniteWeights() throws IOException {
        Path model = model(), weights = model.resolve(ModelFiles.WEIGHTS);
        // transformer.wte.weight is the last tensor in the fixture: its last float is the file's last 4 bytes.
        byte[] bytes = Files.readAllBytes(weights);
        ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).putFloat(bytes.length - 4, Float.NaN);
        Files.write(weights, bytes);
        assertFails(eval(model), weights + ": tensor transformer.wte.weight holds NaN at index 32767");
    }

    // ---------------------------------------------------------------- config against weights

    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
            "n_embd     | 32  | model.safetensors: tensor transformer.wte.weight has shape [512, 64] but the config implies [512, 32]",
            "vocab_size | 600 | model.safetensors: tensor transformer.wte.weight has shape [512, 64] but the config implies [600, 64]",
            "n_layer    | 3   | model.safetensors: tensor transformer.h.2.ln_1.weight is missing",
            "n_layer    | 1   | model.safetensors: 12 tensors have no place in the model",
            "n_head     | 5   | config.json: model config: width 64 is not divisible into 5 heads"})
    void configThatDoesNotMatchTheWeights(String key, int value, String expected) throws IOException {
        Path model = model();
        ObjectNode config = (ObjectNode) JSON.readTree(model.resolve(ModelFiles.CONFIG).toFile());
        config.put(key, value);
        Files.writeString(model.resolve(ModelFiles.CONFIG), config.toString());
        assertFails(eval(model), model.resolve(expected.substring(0, expected.indexOf(':'))).toString(), expected);
    }

    @Test
    void tokenizerLargerThanTheModelsVocabulary() throws IOException {
        Path model = model();
        assertFails(frugal("eval", "--model", model.toString(), "--data", corpus.toString(), "--tokenizer", "gpt2",
                "--device", "cpu"), model + ": the model's vocabulary (512) is smaller than the gpt2 tokenizer's (50257)");
    }

    // ---------------------------------------------------------------- corpora

    @Test
    void emptyCorpusFile() throws IOException {
        Path empty = Files.createFile(tmp.resolve("empty.txt"));
        assertFails(eval(model(), empty), empty + ": corpus is empty");
        Path run = copyOfTrainedRun();
        byte[] checkpoint = Files.readAllBytes(run.resolve(Checkpoint.FILE));
        assertFails(frugal(train(model(), empty, run)), empty + ": corpus is empty");
        assertCheckpointUntouched(run, checkpoint);
    }

    @Test
    void emptyCorpusFolder() throws IOException {
        Path folder = Files.createDirectory(tmp.resolve("texts"));
        Files.writeString(folder.resolve(".hidden.txt"), "hidden files are not part of a corpus");
        Files.writeString(folder.resolve("blank.txt"), " \n\t\n");
        assertFails(frugal(train(model(), folder, tmp.resolve("run"))), folder + ": corpus is empty");
    }

    @Test
    void corpusTooSmallForOneBatch() throws IOException {
        Path small = Files.writeString(tmp.resolve("small.txt"), "just a few words");
        assertFails(frugal(train(model(), small, tmp.resolve("run"))), small + ": the corpus has 17 tokens, too few for batch 2 × sequence 16");
    }

    @Test
    void binaryCorpusFile() throws IOException {
        byte[] noise = new byte[4096];
        random.nextBytes(noise);
        noise[random.nextInt(noise.length)] = 0;
        Path binary = Files.write(tmp.resolve("noise.bin"), noise);
        assertFails(frugal(train(model(), binary, tmp.resolve("run"))), binary + ": not a text file");
    }

    // ---------------------------------------------------------------- sequence length

    @Test
    void sequenceLongerThanThePositions() throws IOException {
        Path model = model(), run = copyOfTrainedRun();
        byte[] checkpoint = Files.readAllBytes(run.resolve(Checkpoint.FILE));
        assertFails(frugal(train(model, corpus, run, "--seq", "100")),
                model.resolve(ModelFiles.CONFIG) + ": sequence length 100 is longer than the model's 64 positions");
        assertCheckpointUntouched(run, checkpoint);
        assertFails(frugal("eval", "--model", model.toString(), "--data", corpus.toString(), "--tokenizer", "byte",
                "--seq", "65", "--device", "cpu"), model + ": sequence length 65 is longer than the model's 64 positions");
    }

    @Test
    void sequenceLongerThanThePresetsPositions() {
        assertFails(frugal("train", "--preset", "tiny", "--tokenizer", "byte", "--data", corpus.toString(), "--seq", "129",
                "--out", tmp.resolve("run").toString(), "--device", "cpu", "--no-progress"),
                "preset tiny: sequence length 129 is longer than the model's 128 positions");
    }

    // ---------------------------------------------------------------- divergence and damaged checkpoints

    @Test
    void nonFiniteLossStopsTrainingAndKeepsTheCheckpoint() throws IOException {
        Path run = copyOfTrainedRun();
        byte[] checkpoint = Files.readAllBytes(run.resolve(Checkpoint.FILE));
        // Step 3 still starts from sane weights; its update at a rate of 1e30 makes step 4's logits overflow.
        Outcome o = frugal(train(model(), corpus, run, "--resume", "--steps", "6", "--lr", "1e30", "--checkpoint-interval", "100"));
        assertFails(o, "step 4: the loss is ", "(training diverged); " + run.resolve(Checkpoint.FILE) + " (step 2) is intact");
        assertCheckpointUntouched(run, checkpoint);
    }

    @Test
    void resumeWithoutCheckpoint() throws IOException {
        Path run = tmp.resolve("run");
        assertFails(frugal(train(model(), corpus, run, "--resume")), run.resolve(Checkpoint.FILE) + ": no checkpoint to --resume from");
    }

    @Test
    void resumeFromTruncatedCheckpoint() throws IOException {
        Path run = copyOfTrainedRun(), file = run.resolve(Checkpoint.FILE);
        long length = random.nextLong(Files.size(file));
        truncate(file, length);
        assertResumeFails(run, length < 8 ? "too short for a safetensors header" : "file truncated?");
    }

    @Test
    void resumeFromCheckpointWithNonFiniteMoments() throws IOException {
        Path run = copyOfTrainedRun(), file = run.resolve(Checkpoint.FILE);
        String name = "optimizer.v.transformer.ln_f.weight";
        long[] offsets = dataOffsets(file, name);
        byte[] bytes = Files.readAllBytes(file);
        ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).putFloat((int) (8 + headerLength(file) + offsets[0] + 4 * 5), Float.POSITIVE_INFINITY);
        Files.write(file, bytes);
        assertResumeFails(run, ": tensor " + name + " holds Infinity at index 5");
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
            "frugal.step   | -3    | metadata frugal.step \"-3\" is not a step count",
            "frugal.state  | [1, 2 | (metadata frugal.state): invalid JSON",
            "frugal.config | {}    | (metadata frugal.config): model_type \"\" is not supported"})
    void resumeFromCheckpointWithForgedMetadata(String key, String value, String expected) throws IOException {
        Path run = copyOfTrainedRun();
        editHeader(run.resolve(Checkpoint.FILE), h -> ((ObjectNode) h.get("__metadata__")).put(key, value));
        assertResumeFails(run, expected);
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
            "batch         | \"two\"     | the checkpoint's setting batch = 'two' is not a number",
            "batch         | 2           | (metadata frugal.state): value of \"batch\" must be a string, got 2",
            "data-position | \"seed=1\"  | unreadable data position",
            "data-position | \"seed=1,epoch=0,index=0,windows=999\" | the saved data position is for 999 training windows but this data has"})
    void resumeFromCheckpointWithForgedState(String key, String json, String expected) throws IOException {
        Path run = copyOfTrainedRun();
        editHeader(run.resolve(Checkpoint.FILE), h -> {
            ObjectNode metadata = (ObjectNode) h.get("__metadata__");
            ObjectNode state = (ObjectNode) parse(metadata.get("frugal.state").textValue());
            state.set(key, parse(json));
            metadata.put("frugal.state", state.toString());
        });
        assertResumeFails(run, expected);
    }

    /** Resuming from the run's damaged checkpoint fails naming it, says {@code problem} and leaves the file as it is. */
    private void assertResumeFails(Path run, String problem) throws IOException {
        Path file = run.resolve(Checkpoint.FILE);
        byte[] damaged = Files.readAllBytes(file);
        assertFails(frugal(train(model(), corpus, run, "--resume", "--steps", "4")), "frugal: " + file, problem);
        assertCheckpointUntouched(run, damaged);
    }

    // ---------------------------------------------------------------- failures the code did not foresee

    @Test
    void unexpectedExceptionIsOneLineUnlessDebugging() {
        StringWriter quiet = new StringWriter();
        assertEquals(1, Main.report(new IllegalStateException("boom"), new PrintWriter(quiet), false));
        assertEquals("frugal: internal error: java.lang.IllegalStateException: boom (set FRUGAL_DEBUG=1 for the stack trace)",
                quiet.toString().strip());

        StringWriter debug = new StringWriter();
        assertEquals(1, Main.report(new IllegalStateException("boom"), new PrintWriter(debug), true));
        assertTrue(debug.toString().startsWith("frugal: internal error: java.lang.IllegalStateException: boom"));
        assertTrue(debug.toString().contains("\tat frugal.cli.BadInputTest"), debug.toString());
    }

    // ---------------------------------------------------------------- helpers

    /** Runs the command line in this JVM, capturing both streams. */
    private static Outcome frugal(String... args) {
        PrintStream stdout = System.out, stderr = System.err;
        ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
        try {
            System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
            System.setErr(new PrintStream(err, true, StandardCharsets.UTF_8));
            int code = Main.run(args);
            return new Outcome(code, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
        } finally {
            System.setOut(stdout);
            System.setErr(stderr);
        }
    }

    /** A short fine-tuning run of the model on the data; {@code more} adds options or overrides the defaults here. */
    private static String[] train(Path model, Path data, Path out, String... more) {
        List<String> given = List.of(more);
        List<String> args = new ArrayList<>(List.of("train", "--model", model.toString(), "--data", data.toString(),
                "--out", out.toString(), "--no-progress"));
        String[][] defaults = {{"--tokenizer", "byte"}, {"--batch", "2"}, {"--seq", "16"}, {"--steps", "3"},
                {"--checkpoint-interval", "1"}, {"--eval-batches", "1"}, {"--sample-tokens", "0"}, {"--device", "cpu"}};
        for (String[] option : defaults) if (!given.contains(option[0])) args.addAll(List.of(option));
        args.addAll(given);
        return args.toArray(String[]::new);
    }

    private Outcome eval(Path model) {
        return eval(model, corpus);
    }

    private static Outcome eval(Path model, Path data) {
        return frugal("eval", "--model", model.toString(), "--data", data.toString(), "--tokenizer", "byte",
                "--max-windows", "2", "--device", "cpu");
    }

    /** Exit code 1 and nothing on stderr but one "frugal: " line holding every part; no stack trace anywhere. */
    private static void assertFails(Outcome o, String... parts) {
        String all = o.out() + o.err();
        assertFalse(all.contains("\tat ") || all.contains("Exception in thread"), "stack trace printed:\n" + all);
        assertEquals(1, o.exitCode(), "exit code; output:\n" + all);
        List<String> lines = o.err().lines().filter(l -> !l.isBlank()).toList();
        assertEquals(1, lines.size(), "one line on stderr expected:\n" + o.err());
        String line = lines.getFirst();
        assertTrue(line.startsWith("frugal: "), line);
        for (String part : parts) assertTrue(line.contains(part), "\"" + part + "\" missing from: " + line);
    }

    private static void assertCheckpointUntouched(Path run, byte[] before) throws IOException {
        assertArrayEquals(before, Files.readAllBytes(run.resolve(Checkpoint.FILE)), "the checkpoint changed");
        try (Stream<Path> files = Files.list(run)) {
            List<String> temporary = files.map(f -> f.getFileName().toString()).filter(n -> n.endsWith(".tmp")).toList();
            assertEquals(List.of(), temporary, "temporary files left behind");
        }
    }

    private Path model() throws IOException {
        return copyModel(Files.createTempDirectory(tmp, "model"));
    }

    private static Path copyModel(Path dir) throws IOException {
        Files.createDirectories(dir);
        for (String name : List.of(ModelFiles.CONFIG, ModelFiles.WEIGHTS)) Files.copy(FIXTURE.resolve(name), dir.resolve(name));
        return dir;
    }

    private Path copyOfTrainedRun() throws IOException {
        Path run = Files.createDirectories(tmp.resolve("run"));
        Files.copy(trainedRun.resolve(Checkpoint.FILE), run.resolve(Checkpoint.FILE));
        Files.copy(trainedRun.resolve("metrics.jsonl"), run.resolve("metrics.jsonl"));
        return run;
    }

    private static void truncate(Path file, long length) throws IOException {
        byte[] bytes = Files.readAllBytes(file);
        assertNotEquals(bytes.length, length);
        Files.write(file, Arrays.copyOf(bytes, (int) length));
    }

    private static long headerLength(Path file) throws IOException {
        byte[] prefix = Arrays.copyOf(Files.readAllBytes(file), 8);
        return ByteBuffer.wrap(prefix).order(ByteOrder.LITTLE_ENDIAN).getLong();
    }

    private static long[] dataOffsets(Path file, String tensor) throws IOException {
        byte[] bytes = Files.readAllBytes(file);
        JsonNode offsets = JSON.readTree(Arrays.copyOfRange(bytes, 8, 8 + (int) headerLength(file))).get(tensor).get("data_offsets");
        return new long[]{offsets.get(0).longValue(), offsets.get(1).longValue()};
    }

    /** Rewrites a safetensors header (padded with spaces to 8 bytes, as Hugging Face does), keeping the data area. */
    private static void editHeader(Path file, Consumer<ObjectNode> edit) throws IOException {
        byte[] bytes = Files.readAllBytes(file);
        int n = (int) headerLength(file);
        ObjectNode header = (ObjectNode) JSON.readTree(Arrays.copyOfRange(bytes, 8, 8 + n));
        edit.accept(header);
        byte[] json = header.toString().getBytes(StandardCharsets.UTF_8);
        int padded = (json.length + 7) & ~7;
        ByteBuffer out = ByteBuffer.allocate(8 + padded + bytes.length - 8 - n).order(ByteOrder.LITTLE_ENDIAN);
        out.putLong(padded).put(json);
        while (out.position() < 8 + padded) out.put((byte) ' ');
        out.put(bytes, 8 + n, bytes.length - 8 - n);
        Files.write(file, out.array());
    }

    /** Moves a tensor's data_offsets by {@code bytes}, keeping its size. */
    private static void shift(ObjectNode header, String tensor, long bytes) {
        ArrayNode offsets = (ArrayNode) header.get(tensor).get("data_offsets");
        offsets.set(0, offsets.get(0).longValue() + bytes);
        offsets.set(1, offsets.get(1).longValue() + bytes);
    }

    private static JsonNode parse(String json) {
        try {
            return JSON.readTree(json);
        } catch (IOException e) {
            throw new AssertionError(e);
        }
    }
}
