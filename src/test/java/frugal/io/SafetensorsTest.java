package frugal.io;

import com.fasterxml.jackson.databind.JsonNode;
import frugal.FrugalException;
import frugal.io.Safetensors.Entry;
import frugal.tensor.DType;
import frugal.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class SafetensorsTest {
    private static final Path FIXTURES = Path.of("src/test/resources/fixtures");

    @TempDir
    Path dir;

    private final long seed = System.nanoTime();
    private final Random random = new Random(seed);

    // ---------------------------------------------------------------- round trips

    @Test
    void roundTripsEveryWritableKind() {
        float[] f32 = gaussian(6 * 7);
        float[] bf16 = gaussian(5); // odd element count: the writer must still keep wider tensors aligned
        int[] i32 = random.ints(12).toArray();
        long[] i64 = random.longs(4).toArray();
        Path file = dir.resolve("rt.safetensors");
        Safetensors.write(file, Map.of("step", "17", "seed", Long.toString(seed)), List.of(
                Entry.bf16("b", new int[]{5}, bf16),
                Entry.f32("w", new int[]{6, 7}, f32),
                Entry.i32("ids", new int[]{3, 4}, i32),
                Entry.i64("big", new int[]{2, 2}, i64),
                Entry.f32("scalar", new int[]{}, new float[]{(float) random.nextGaussian()}),
                Entry.f32("empty", new int[]{0, 3}, new float[0])));

        try (Safetensors st = Safetensors.open(file)) {
            assertEquals(Map.of("step", "17", "seed", Long.toString(seed)), st.metadata());
            assertEquals(6, st.names().size());
            assertArrayEquals(new int[]{6, 7}, st.shape("w"));
            assertEquals("F32", st.dtype("w"));
            assertArrayEquals(f32, st.readFloats("w"), "seed " + seed);
            assertEquals("I32", st.dtype("ids"));
            assertArrayEquals(i32, st.readInts("ids"));
            assertArrayEquals(Arrays.stream(i32).asLongStream().toArray(), st.readLongs("ids"));
            assertArrayEquals(i64, st.readLongs("big"));
            assertArrayEquals(new int[]{}, st.shape("scalar"));
            assertEquals(1, st.readFloats("scalar").length);
            assertEquals(0, st.readFloats("empty").length);

            assertEquals("BF16", st.dtype("b"));
            float[] back = st.readFloats("b");
            for (int i = 0; i < bf16.length; i++) {
                // bfloat16 keeps 8 significant bits: round-to-nearest is within half an ulp, 2^-8 relative.
                assertEquals(bf16[i], back[i], Math.abs(bf16[i]) * 0x1p-8f, "seed " + seed + " index " + i);
                assertNotEquals(0f, back[i]);
            }
        }
    }

    @Test
    void writesHeaderPaddedAndTensorsAlignedAsHuggingFaceDoes() throws IOException {
        Path file = dir.resolve("aligned.safetensors");
        Safetensors.write(file, Map.of(), List.of(
                Entry.bf16("odd", new int[]{3}, gaussian(3)),
                Entry.i64("l", new int[]{3}, random.longs(3).toArray()),
                Entry.f32("f", new int[]{5}, gaussian(5))));
        ByteBuffer b = ByteBuffer.wrap(Files.readAllBytes(file)).order(ByteOrder.LITTLE_ENDIAN);
        long n = b.getLong(0);
        assertEquals(0, n % 8, "header length must keep the data area 8-aligned");
        JsonNode header = JsonFiles.MAPPER.readTree(Arrays.copyOfRange(b.array(), 8, 8 + (int) n));
        assertFalse(header.has("__metadata__"));
        long expectedBegin = 0;
        for (String name : List.of("l", "f", "odd")) { // widest first, stable within a width, no gaps
            JsonNode off = header.get(name).get("data_offsets");
            assertEquals(expectedBegin, off.get(0).longValue(), name);
            expectedBegin = off.get(1).longValue();
        }
        assertEquals(b.capacity(), 8 + n + expectedBegin);
    }

    @Test
    void bf16RoundsToNearestEvenAndKeepsSpecialValues() {
        float one = 1f, ulp = 0x1p-7f; // bf16 spacing just above 1
        float[] in = {one + ulp / 2, one + 1.5f * ulp, one + 0.75f * ulp, -(one + 0.25f * ulp),
                Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY, -0f, Float.MAX_VALUE};
        float[] out = roundTrip(Entry.bf16("x", new int[]{in.length}, in)).readFloats("x");
        assertEquals(one, out[0]);              // tie goes to the even neighbour (1.0)
        assertEquals(one + 2 * ulp, out[1]);    // tie goes to the even neighbour (1 + 2 ulp)
        assertEquals(one + ulp, out[2]);        // above the tie rounds up
        assertEquals(-one, out[3]);             // below the tie rounds down
        assertTrue(Float.isNaN(out[4]));
        assertEquals(Float.POSITIVE_INFINITY, out[5]);
        assertEquals(Float.NEGATIVE_INFINITY, out[6]);
        assertEquals(Float.floatToIntBits(-0f), Float.floatToIntBits(out[7]));
        assertEquals(Float.POSITIVE_INFINITY, out[8]); // rounds past the largest bf16
    }

    @Test
    void convertsF16AndF64ToFloat() {
        float[] values = gaussian(9);
        Entry f16 = new Entry("h", "F16", new int[]{9}, dst -> {
            for (int i = 0; i < values.length; i++) dst.setAtIndex(LE_SHORT, i, Float.floatToFloat16(values[i]));
        });
        Entry f64 = new Entry("d", "F64", new int[]{3, 3}, dst -> {
            for (int i = 0; i < values.length; i++) dst.setAtIndex(LE_DOUBLE, i, values[i]);
        });
        Safetensors st = roundTrip(f16, f64);
        assertArrayEquals(values, st.readFloats("d"));
        float[] h = st.readFloats("h");
        for (int i = 0; i < values.length; i++) assertEquals(values[i], h[i], Math.abs(values[i]) * 0x1p-11f, "seed " + seed);
        st.close();
    }

    @Test
    void readsIntoHostTensorsAndWritesThemBack() {
        float[] w = gaussian(4 * 3);
        int[] ids = random.ints(5, 0, 512).toArray();
        Safetensors st = roundTrip(Entry.f32("w", new int[]{4, 3}, w), Entry.i64("ids", new int[]{5},
                Arrays.stream(ids).asLongStream().toArray()));
        try (Arena arena = Arena.ofConfined()) {
            Tensor wt = new Tensor(arena.allocate(12 * 4L), DType.F32, 4, 3);
            wt.data().fill((byte) 0x7f); // not zero and not the answer: every element must be overwritten
            st.readInto("w", wt);
            assertArrayEquals(w, wt.toFloatArray());

            Tensor it = new Tensor(arena.allocate(5 * 4L), DType.I32, 5);
            st.readInto("ids", it);
            assertArrayEquals(ids, it.toIntArray());

            Path again = dir.resolve("again.safetensors");
            Safetensors.write(again, Map.of(), List.of(Entry.of("w", wt), Entry.of("ids", it)));
            try (Safetensors back = Safetensors.open(again)) {
                assertArrayEquals(w, back.readFloats("w"));
                assertArrayEquals(ids, back.readInts("ids"));
            }
        }
        st.close();
    }

    // ---------------------------------------------------------------- real Hugging Face files

    @Test
    void readsGpt2Fixture() {
        try (Safetensors st = Safetensors.open(FIXTURES.resolve("gpt2-tiny/model.safetensors"))) {
            assertEquals("pt", st.metadata().get("format"));
            assertEquals(28, st.names().size()); // 12 per layer + wte, wpe, ln_f
            assertArrayEquals(new int[]{512, 64}, st.shape("transformer.wte.weight"));
            assertArrayEquals(new int[]{64, 64}, st.shape("transformer.wpe.weight"));
            assertArrayEquals(new int[]{64, 192}, st.shape("transformer.h.0.attn.c_attn.weight"));
            assertArrayEquals(new int[]{256, 64}, st.shape("transformer.h.1.mlp.c_proj.weight"));
            assertFalse(st.contains("lm_head.weight")); // tied to wte, not stored
            float[] wte = st.readFloats("transformer.wte.weight");
            assertEquals(512 * 64, wte.length);
            // First values as Python's struct module reads them.
            assertEquals(-0.031329624354839325f, wte[0]);
            assertEquals(0.010140308178961277f, wte[1]);
        }
    }

    @Test
    void readsLlamaFixture() {
        try (Safetensors st = Safetensors.open(FIXTURES.resolve("llama-tiny/model.safetensors"))) {
            assertArrayEquals(new int[]{512, 64}, st.shape("lm_head.weight"));
            assertArrayEquals(new int[]{512, 64}, st.shape("model.embed_tokens.weight"));
            assertArrayEquals(new int[]{32, 64}, st.shape("model.layers.0.self_attn.k_proj.weight"));
            assertArrayEquals(new int[]{176, 64}, st.shape("model.layers.1.mlp.gate_proj.weight"));
            assertArrayEquals(new int[]{64}, st.shape("model.norm.weight"));
            for (String name : st.names()) assertEquals("F32", st.dtype(name), name);
        }
    }

    @Test
    void readsReferenceFixtures() {
        for (String model : List.of("gpt2-tiny", "llama-tiny")) {
            JsonNode facts = JsonFiles.read(FIXTURES.resolve(model + "/reference.json"));
            try (Safetensors st = Safetensors.open(FIXTURES.resolve(model + "/reference.safetensors"))) {
                assertEquals("I32", st.dtype("input_ids"), model);
                assertArrayEquals(new int[]{2, 32}, st.shape("input_ids"), model);
                assertArrayEquals(new int[]{2, 32}, st.shape("targets"), model);
                assertArrayEquals(new int[]{2, 32, 512}, st.shape("logits"), model);
                int[] ids = st.readInts("input_ids");
                assertTrue(Arrays.stream(ids).allMatch(t -> t >= 0 && t < 512), model);
                assertEquals(facts.get("loss").asDouble(), st.readFloats("loss")[0], 1e-5, model);
                for (JsonNode p : facts.get("parameters")) assertTrue(st.contains("grad." + p.asText()), p.asText());
            }
        }
        try (Safetensors st = Safetensors.open(FIXTURES.resolve("gpt2-tiny/reference.safetensors"))) {
            assertArrayEquals(new int[]{474, 462, 430, 116}, Arrays.copyOf(st.readInts("input_ids"), 4));
        }
    }

    // ---------------------------------------------------------------- bad input

    @Test
    void missingFileAndDirectory() {
        expectFailure(dir.resolve("nope.safetensors"), "not found");
        Path sub = dir.resolve("model-dir");
        assertTrue(sub.toFile().mkdir());
        expectFailure(sub, "directory");
    }

    @Test
    void truncatedFile() throws IOException {
        byte[] whole = Files.readAllBytes(FIXTURES.resolve("gpt2-tiny/model.safetensors"));
        int headerEnd = 8 + (int) ByteBuffer.wrap(whole).order(ByteOrder.LITTLE_ENDIAN).getLong();
        for (int cut : new int[]{0, 1, 7, 8, 9, headerEnd / 2, headerEnd - 1, headerEnd, headerEnd + 1000, whole.length - 1}) {
            Path file = dir.resolve("cut-" + cut + ".safetensors");
            Files.write(file, Arrays.copyOf(whole, cut));
            expectFailure(file, "");
        }
        expectFailure(write("short.safetensors", Arrays.copyOf(whole, 5)), "too short");
        expectFailure(write("cut-data.safetensors", Arrays.copyOf(whole, whole.length - 1)), "transformer.wte.weight");
    }

    @Test
    void forgedHeaderLength() throws IOException {
        byte[] whole = Files.readAllBytes(FIXTURES.resolve("llama-tiny/model.safetensors"));
        long real = ByteBuffer.wrap(whole).order(ByteOrder.LITTLE_ENDIAN).getLong();
        for (long forged : new long[]{-1, Long.MAX_VALUE, 1L << 40, Safetensors.MAX_HEADER_BYTES + 1, whole.length,
                whole.length - 7, real - 1, real + 1, 0}) {
            byte[] copy = whole.clone();
            ByteBuffer.wrap(copy).order(ByteOrder.LITTLE_ENDIAN).putLong(0, forged);
            expectFailure(write("forged-" + forged + ".safetensors", copy), "");
        }
        byte[] copy = whole.clone();
        ByteBuffer.wrap(copy).order(ByteOrder.LITTLE_ENDIAN).putLong(0, 1L << 40);
        expectFailure(write("absurd.safetensors", copy), "absurd");
    }

    @Test
    void headerGarbage() {
        byte[] noise = new byte[64];
        random.nextBytes(noise);
        expectFailure(withHeader("noise", noise, 0), "invalid JSON");
        expectFailure(withHeader("array", "[1, 2, 3]", 0), "not an object");
        expectFailure(withHeader("open", "{\"w\": {\"dtype\": \"F32\"", 0), "invalid JSON");
        expectFailure(withHeader("trailing", "{} {}", 0), "invalid JSON");
        expectFailure(withHeader("empty", "", 0), "JSON");
        expectFailure(withHeader("entry", "{\"w\": 3}", 0), "tensor w");
        expectFailure(withHeader("dtype", "{\"w\": {\"dtype\": \"F31\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4), "unknown dtype");
        expectFailure(withHeader("nodtype", "{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4), "dtype");
        expectFailure(withHeader("negative", "{\"w\": {\"dtype\": \"F32\", \"shape\": [-1, 4], \"data_offsets\": [0, 4]}}", 4), "non-negative");
        expectFailure(withHeader("fraction", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 4), "shape");
        expectFailure(withHeader("nooffsets", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4), "data_offsets");
        expectFailure(withHeader("backwards", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}}", 4), "data_offsets");
        expectFailure(withHeader("dup", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                + " \"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4), "invalid JSON");
        expectFailure(withHeader("meta", "{\"__metadata__\": {\"step\": 3}}", 0), "__metadata__");
    }

    @Test
    void offsetsOutOfRange() {
        expectFailure(withHeader("past", "{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [8, 24]}}", 16), "data area");
        expectFailure(withHeader("huge", "{\"w\": {\"dtype\": \"I8\", \"shape\": [2147483647, 2147483647, 4],"
                + " \"data_offsets\": [0, 18446744073709551615]}}", 16), "tensor w");
        expectFailure(withHeader("overlap", "{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 12]},"
                + " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}", 16), "overlap");
        expectFailure(withHeader("gap", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                + " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}}", 12), "unused bytes");
        expectFailure(withHeader("trailing", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 8), "cover");
    }

    @Test
    void shapeSizeMismatch() {
        Path file = withHeader("mismatch", "{\"w\": {\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [0, 16]}}", 32);
        FrugalException e = expectFailure(file, "tensor w");
        assertTrue(e.getMessage().contains("needs 24"), e.getMessage());
        expectFailure(withHeader("bf16size", "{\"w\": {\"dtype\": \"BF16\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 16), "needs 8");
    }

    @Test
    void wrongShapeReadInto() {
        Path file = FIXTURES.resolve("gpt2-tiny/model.safetensors");
        try (Safetensors st = Safetensors.open(file); Arena arena = Arena.ofConfined()) {
            Tensor wrong = new Tensor(arena.allocate(512 * 64 * 4L), DType.F32, 64, 512);
            FrugalException e = assertThrows(FrugalException.class, () -> st.readInto("transformer.wte.weight", wrong));
            assertTrue(e.getMessage().contains("model.safetensors: tensor transformer.wte.weight has shape [512, 64]"
                    + " but the model expects [64, 512]"), e.getMessage());
        }
    }

    @Test
    void wrongKindOrNameIsReportedWithTheFile() {
        try (Safetensors st = Safetensors.open(FIXTURES.resolve("gpt2-tiny/reference.safetensors"))) {
            assertMessage(assertThrows(FrugalException.class, () -> st.readInts("logits")), "logits");
            assertMessage(assertThrows(FrugalException.class, () -> st.readFloats("input_ids")), "input_ids");
            assertMessage(assertThrows(FrugalException.class, () -> st.shape("no.such.tensor")), "no.such.tensor");
        }
        Safetensors st = roundTrip(Entry.i64("big", new int[]{1}, new long[]{1L << 40}));
        assertMessage(assertThrows(FrugalException.class, () -> st.readInts("big")), "does not fit");
        st.close();
        assertThrows(IllegalStateException.class, () -> st.readLongs("big"));
    }

    @Test
    void jsonFilesNameTheFile() throws IOException {
        assertEquals(64, JsonFiles.read(FIXTURES.resolve("gpt2-tiny/config.json")).get("n_embd").asInt());
        Path missing = dir.resolve("missing.json");
        assertTrue(assertThrows(FrugalException.class, () -> JsonFiles.read(missing)).getMessage().contains("missing.json"));
        Path bad = write("bad.json", "{\"n_embd\": 64,".getBytes(StandardCharsets.UTF_8));
        assertTrue(assertThrows(FrugalException.class, () -> JsonFiles.read(bad)).getMessage().contains("bad.json"));
    }

    // ---------------------------------------------------------------- atomic writes

    @Test
    void failedWriteLeavesTheOriginalUntouched() throws IOException {
        Path file = dir.resolve("ckpt.safetensors");
        Safetensors.write(file, Map.of("step", "1"), List.of(Entry.f32("w", new int[]{64, 64}, gaussian(64 * 64))));
        byte[] before = Files.readAllBytes(file);

        RuntimeException boom = new IllegalStateException("device copy failed");
        List<Entry> entries = List.of(
                Entry.f32("first", new int[]{256, 64}, gaussian(256 * 64)), // written to the temp file before the failure
                new Entry("second", "F32", new int[]{8}, dst -> {
                    throw boom;
                }));
        assertEquals(boom, assertThrows(IllegalStateException.class, () -> Safetensors.write(file, Map.of("step", "2"), entries)));
        assertArrayEquals(before, Files.readAllBytes(file));
        assertEquals(List.of(file), listDir());

        Path fresh = dir.resolve("fresh.safetensors");
        assertThrows(IllegalStateException.class, () -> Safetensors.write(fresh, Map.of(), entries));
        assertFalse(Files.exists(fresh));
        assertEquals(List.of(file), listDir());
    }

    @Test
    void successfulWriteReplacesTheFileAndLeavesNoTemp() throws IOException {
        Path file = dir.resolve("ckpt.safetensors");
        Safetensors.write(file, Map.of("step", "1"), List.of(Entry.f32("w", new int[]{3}, gaussian(3))));
        float[] next = gaussian(5);
        Safetensors.write(file, Map.of("step", "2"), List.of(Entry.f32("w", new int[]{5}, next)));
        try (Safetensors st = Safetensors.open(file)) {
            assertEquals("2", st.metadata().get("step"));
            assertArrayEquals(next, st.readFloats("w"));
        }
        assertEquals(List.of(file), listDir());
    }

    @Test
    void writeIntoMissingDirectoryNamesTheFile() {
        Path file = dir.resolve("no/such/dir/x.safetensors");
        FrugalException e = assertThrows(FrugalException.class,
                () -> Safetensors.write(file, Map.of(), List.of(Entry.f32("w", new int[]{1}, gaussian(1)))));
        assertMessage(e, "x.safetensors");
    }

    // ---------------------------------------------------------------- helpers

    private static final ValueLayout.OfShort LE_SHORT = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfDouble LE_DOUBLE = ValueLayout.JAVA_DOUBLE_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    /** Non-zero Gaussian values, fresh each run. */
    private float[] gaussian(int n) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            do v[i] = (float) random.nextGaussian(); while (v[i] == 0f);
        }
        return v;
    }

    private Safetensors roundTrip(Entry... entries) {
        Path file = dir.resolve("rt-" + random.nextInt(1 << 30) + ".safetensors");
        Safetensors.write(file, Map.of(), List.of(entries));
        return Safetensors.open(file);
    }

    /** A file with this exact header text followed by {@code dataBytes} random bytes. */
    private Path withHeader(String name, String header, int dataBytes) {
        return withHeader(name, header.getBytes(StandardCharsets.UTF_8), dataBytes);
    }

    private Path withHeader(String name, byte[] header, int dataBytes) {
        byte[] data = new byte[dataBytes];
        random.nextBytes(data);
        ByteBuffer b = ByteBuffer.allocate(8 + header.length + dataBytes).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(header.length).put(header).put(data);
        return write(name + ".safetensors", b.array());
    }

    private Path write(String name, byte[] bytes) {
        try {
            return Files.write(dir.resolve(name), bytes);
        } catch (IOException e) {
            throw new AssertionError(e);
        }
    }

    /** Opening {@code file} must fail with a message naming the file and containing {@code detail}. */
    private static FrugalException expectFailure(Path file, String detail) {
        FrugalException e = assertThrows(FrugalException.class, () -> Safetensors.open(file).close(), file.toString());
        assertMessage(e, file.getFileName().toString());
        assertMessage(e, detail);
        return e;
    }

    private static void assertMessage(Exception e, String part) {
        assertTrue(e.getMessage().contains(part), "expected \"" + part + "\" in: " + e.getMessage());
    }

    private List<Path> listDir() throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.sorted().toList();
        }
    }
}
