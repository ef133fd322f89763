package frugal.io;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import frugal.FrugalException;
import frugal.tensor.Tensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A safetensors file: an 8-byte little-endian header length N, N bytes of JSON describing each tensor
 * ({@code {"dtype", "shape", "data_offsets": [begin, end]}}, offsets relative to the data area) plus an optional
 * {@code "__metadata__"} map of strings, then the raw little-endian tensor data.
 *
 * <p>{@link #open} memory-maps the file and validates the whole header before anything is read (lengths, JSON,
 * dtypes, shapes against offsets, tensors tiling the data area), so a corrupt or foreign file fails up front with
 * a message naming the file and tensor rather than as garbage weights later.
 * {@link #write} produces files Hugging Face's reader accepts, replacing the target atomically.
 */
public final class Safetensors implements AutoCloseable {
    /** HF's own reader refuses headers above 100 MB; anything larger is corruption, not a model. */
    static final long MAX_HEADER_BYTES = 100L << 20;
    private static final String METADATA_KEY = "__metadata__";

    // Data offsets carry no alignment promise, so every read uses unaligned little-endian layouts.
    private static final ValueLayout.OfShort LE_SHORT = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfInt LE_INT = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfLong LE_LONG = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfFloat LE_FLOAT = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfDouble LE_DOUBLE = ValueLayout.JAVA_DOUBLE_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    /** The dtypes of the safetensors spec that have a fixed byte width. */
    private enum StoredType {
        BOOL(1), U8(1), I8(1), F8_E4M3(1), F8_E5M2(1), I16(2), U16(2), F16(2), BF16(2),
        I32(4), U32(4), F32(4), I64(8), U64(8), F64(8);

        final int bytes;

        StoredType(int bytes) {
            this.bytes = bytes;
        }

        static StoredType parse(String name) {
            for (StoredType t : values()) if (t.name().equals(name)) return t;
            return null;
        }
    }

    /** One tensor's header entry, validated; begin/end are offsets into the data area. */
    private record Info(String name, StoredType type, int[] shape, long count, long begin, long end) {
    }

    private final Path file;
    private final Arena arena;
    private final MemorySegment dataArea;
    private final Map<String, Info> tensors;
    private final Map<String, String> metadata;
    private volatile boolean closed;

    private Safetensors(Path file, Arena arena, MemorySegment dataArea, Map<String, Info> tensors, Map<String, String> metadata) {
        this.file = file;
        this.arena = arena;
        this.dataArea = dataArea;
        this.tensors = Collections.unmodifiableMap(tensors);
        this.metadata = Collections.unmodifiableMap(metadata);
    }

    // ---------------------------------------------------------------- reading

    /** Maps and validates {@code file}; every problem is a {@link FrugalException} naming the file. */
    public static Safetensors open(Path file) {
        if (Files.isDirectory(file)) throw fail(file, "is a directory, expected a .safetensors file");
        Arena arena = Arena.ofShared();
        try {
            MemorySegment all;
            try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
                long size = ch.size();
                if (size < 8) {
                    throw fail(file, "file is " + size + " bytes, too short for a safetensors header (8-byte length + JSON)");
                }
                all = ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
            }
            return parse(file, arena, all);
        } catch (NoSuchFileException e) {
            arena.close();
            throw fail(file, "file not found");
        } catch (IOException e) {
            arena.close();
            throw new FrugalException(file + ": cannot read file: " + AtomicFile.describe(e), e);
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    private static Safetensors parse(Path file, Arena arena, MemorySegment all) {
        long size = all.byteSize();
        long n = all.get(LE_LONG, 0);
        if (n < 0 || n > MAX_HEADER_BYTES) {
            throw fail(file, "header length " + Long.toUnsignedString(n) + " is absurd (limit " + MAX_HEADER_BYTES
                    + " bytes); not a safetensors file or corrupt");
        }
        if (n > size - 8) {
            throw fail(file, "header length " + n + " exceeds the " + (size - 8) + " bytes after the length prefix; file truncated?");
        }
        JsonNode root = JsonFiles.parse(file + ": safetensors header", all.asSlice(8, n).toArray(ValueLayout.JAVA_BYTE));
        if (!root.isObject()) throw fail(file, "safetensors header is JSON but not an object");

        MemorySegment dataArea = all.asSlice(8 + n);
        Map<String, Info> tensors = new LinkedHashMap<>();
        Map<String, String> metadata = new LinkedHashMap<>();
        for (Map.Entry<String, JsonNode> field : root.properties()) {
            if (field.getKey().equals(METADATA_KEY)) {
                parseMetadata(file, field.getValue(), metadata);
            } else {
                tensors.put(field.getKey(), parseTensor(file, field.getKey(), field.getValue(), dataArea.byteSize()));
            }
        }
        checkLayout(file, tensors.values(), dataArea.byteSize());
        return new Safetensors(file, arena, dataArea, tensors, metadata);
    }

    private static void parseMetadata(Path file, JsonNode node, Map<String, String> out) {
        if (!node.isObject()) throw fail(file, METADATA_KEY + " must be an object of strings");
        for (Map.Entry<String, JsonNode> e : node.properties()) {
            if (!e.getValue().isTextual()) {
                throw fail(file, METADATA_KEY + " value for \"" + e.getKey() + "\" must be a string, got " + e.getValue());
            }
            out.put(e.getKey(), e.getValue().textValue());
        }
    }

    private static Info parseTensor(Path file, String name, JsonNode node, long dataSize) {
        String where = "tensor " + name + ": ";
        if (!node.isObject()) throw fail(file, where + "header entry must be an object, got " + node);

        JsonNode dtypeNode = node.get("dtype");
        if (dtypeNode == null || !dtypeNode.isTextual()) throw fail(file, where + "missing or non-string \"dtype\"");
        StoredType type = StoredType.parse(dtypeNode.textValue());
        if (type == null) throw fail(file, where + "unknown dtype \"" + dtypeNode.textValue() + "\"");

        JsonNode shapeNode = node.get("shape");
        if (shapeNode == null || !shapeNode.isArray()) throw fail(file, where + "missing or non-array \"shape\"");
        int[] shape = new int[shapeNode.size()];
        for (int i = 0; i < shape.length; i++) {
            JsonNode d = shapeNode.get(i);
            if (!d.isIntegralNumber() || !d.canConvertToInt() || d.intValue() < 0) {
                throw fail(file, where + "shape " + shapeNode + " must hold non-negative 32-bit integers");
            }
            shape[i] = d.intValue();
        }

        JsonNode off = node.get("data_offsets");
        if (off == null || !off.isArray() || off.size() != 2) throw fail(file, where + "\"data_offsets\" must be [begin, end]");
        for (JsonNode o : off) {
            if (!o.isIntegralNumber() || !o.canConvertToLong() || o.longValue() < 0) {
                throw fail(file, where + "data_offsets " + off + " must be non-negative integers");
            }
        }
        long begin = off.get(0).longValue(), end = off.get(1).longValue();
        if (begin > end) throw fail(file, where + "data_offsets " + off + " end before they begin");

        long count, bytes;
        try {
            count = 1;
            for (int d : shape) count = Math.multiplyExact(count, d);
            bytes = Math.multiplyExact(count, type.bytes);
        } catch (ArithmeticException e) {
            throw fail(file, where + "shape " + shapeNode + " is too large");
        }
        if (end - begin != bytes) {
            throw fail(file, where + "data_offsets " + off + " span " + (end - begin) + " bytes but " + type + " "
                    + Arrays.toString(shape) + " needs " + bytes);
        }
        if (end > dataSize) {
            throw fail(file, where + "data_offsets " + off + " reach past the data area of " + dataSize + " bytes; file truncated?");
        }
        return new Info(name, type, shape, count, begin, end);
    }

    /**
     * The tensors must tile the data area exactly, as HF's reader demands. Besides overlap this catches a forged
     * header length that still parses (HF pads headers with spaces) and a file cut or padded after the header.
     */
    private static void checkLayout(Path file, Iterable<Info> infos, long dataSize) {
        List<Info> sorted = new ArrayList<>();
        for (Info t : infos) if (t.end > t.begin) sorted.add(t); // empty tensors occupy no bytes
        sorted.sort(Comparator.comparingLong(Info::begin));
        long covered = 0;
        Info previous = null;
        for (Info t : sorted) {
            if (t.begin < covered) {
                throw fail(file, "tensors " + previous.name + " [" + previous.begin + ", " + previous.end + ") and "
                        + t.name + " [" + t.begin + ", " + t.end + ") overlap");
            }
            if (t.begin > covered) {
                throw fail(file, "tensor " + t.name + ": " + (t.begin - covered) + " unused bytes before its data at "
                        + t.begin + "; header length or data_offsets wrong");
            }
            covered = t.end;
            previous = t;
        }
        if (covered != dataSize) {
            throw fail(file, "tensors cover " + covered + " bytes but the data area holds " + dataSize
                    + "; header length wrong or file padded");
        }
    }

    public Path file() {
        return file;
    }

    /** Tensor names in header order. */
    public Set<String> names() {
        return tensors.keySet();
    }

    public boolean contains(String name) {
        return tensors.containsKey(name);
    }

    /** The {@code __metadata__} map (empty if the file has none). */
    public Map<String, String> metadata() {
        return metadata;
    }

    public int[] shape(String name) {
        return info(name).shape.clone();
    }

    /** The stored dtype as the file spells it: "F32", "BF16", "I64", ... */
    public String dtype(String name) {
        return info(name).type.name();
    }

    /** The tensor's raw little-endian bytes, read-only and valid until {@link #close()}. */
    public MemorySegment bytes(String name) {
        return slice(info(name));
    }

    /** The tensor as floats; F32, F16, BF16 and F64 are converted. */
    public float[] readFloats(String name) {
        Info t = info(name);
        float[] out = new float[arrayLength(t)];
        convertFloats(t, MemorySegment.ofArray(out));
        return out;
    }

    /** The tensor as ints; I32 as is, I64 if every value fits in an int. */
    public int[] readInts(String name) {
        Info t = info(name);
        int[] out = new int[arrayLength(t)];
        convertInts(t, MemorySegment.ofArray(out));
        return out;
    }

    /** The tensor as longs; I64 as is, I32 widened. */
    public long[] readLongs(String name) {
        Info t = info(name);
        long[] out = new long[arrayLength(t)];
        MemorySegment src = slice(t);
        switch (t.type) {
            case I64 -> MemorySegment.copy(src, LE_LONG, 0, out, 0, out.length);
            case I32 -> {
                for (int i = 0; i < out.length; i++) out[i] = src.getAtIndex(LE_INT, i);
            }
            default -> throw wrongType(t, "an integer dtype (I32, I64)");
        }
        return out;
    }

    /**
     * Loads the tensor into a host tensor of the same shape: into an F32 tensor from any float dtype, into an I32
     * tensor from I32/I64. A shape mismatch names both shapes, since it usually means the wrong config.
     */
    public void readInto(String name, Tensor dst) {
        Info t = info(name);
        if (!Arrays.equals(t.shape, dst.shape())) {
            throw fail(file, "tensor " + name + " has shape " + Arrays.toString(t.shape) + " but the model expects "
                    + Arrays.toString(dst.shape()));
        }
        MemorySegment out = dst.data().asSlice(0, dst.byteSize());
        switch (dst.dtype()) {
            case F32 -> convertFloats(t, out);
            case I32 -> convertInts(t, out);
            default -> throw new IllegalArgumentException("readInto supports F32 and I32 tensors, not " + dst);
        }
    }

    /** Writes t's values as native-order floats into dst. */
    private void convertFloats(Info t, MemorySegment dst) {
        MemorySegment src = slice(t);
        long n = t.count;
        switch (t.type) {
            case F32 -> MemorySegment.copy(src, LE_FLOAT, 0, dst, ValueLayout.JAVA_FLOAT, 0, n);
            case BF16 -> {
                for (long i = 0; i < n; i++) dst.setAtIndex(ValueLayout.JAVA_FLOAT, i, bf16ToFloat(src.getAtIndex(LE_SHORT, i)));
            }
            case F16 -> {
                for (long i = 0; i < n; i++) dst.setAtIndex(ValueLayout.JAVA_FLOAT, i, Float.float16ToFloat(src.getAtIndex(LE_SHORT, i)));
            }
            case F64 -> {
                for (long i = 0; i < n; i++) dst.setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) src.getAtIndex(LE_DOUBLE, i));
            }
            default -> throw wrongType(t, "a floating-point dtype (F32, F16, BF16, F64)");
        }
    }

    /** Writes t's values as native-order ints into dst. */
    private void convertInts(Info t, MemorySegment dst) {
        MemorySegment src = slice(t);
        long n = t.count;
        switch (t.type) {
            case I32 -> MemorySegment.copy(src, LE_INT, 0, dst, ValueLayout.JAVA_INT, 0, n);
            case I64 -> {
                for (long i = 0; i < n; i++) {
                    long v = src.getAtIndex(LE_LONG, i);
                    if (v != (int) v) throw fail(file, "tensor " + t.name + ": I64 value " + v + " at index " + i + " does not fit in an int");
                    dst.setAtIndex(ValueLayout.JAVA_INT, i, (int) v);
                }
            }
            default -> throw wrongType(t, "an integer dtype (I32, I64)");
        }
    }

    private Info info(String name) {
        if (closed) throw new IllegalStateException(file + ": already closed");
        Info t = tensors.get(name);
        if (t == null) throw fail(file, "no tensor named " + name);
        return t;
    }

    private MemorySegment slice(Info t) {
        return dataArea.asSlice(t.begin, t.end - t.begin);
    }

    private int arrayLength(Info t) {
        if (t.count > Integer.MAX_VALUE - 8) {
            throw fail(file, "tensor " + t.name + " has " + t.count + " elements, too many for a Java array; use readInto");
        }
        return (int) t.count;
    }

    private FrugalException wrongType(Info t, String expected) {
        return fail(file, "tensor " + t.name + " is " + t.type + ", expected " + expected);
    }

    private static FrugalException fail(Path file, String problem) {
        return new FrugalException(file + ": " + problem);
    }

    /** Releases the mapping; segments from {@link #bytes} become invalid. Idempotent. */
    @Override
    public synchronized void close() {
        if (!closed) {
            closed = true;
            arena.close();
        }
    }

    // ---------------------------------------------------------------- writing

    /**
     * One tensor to write. Its bytes come from {@code source}, which fills a zeroed buffer of exactly
     * {@link #byteSize()} bytes with little-endian values — so a device tensor can be downloaded straight into
     * it. Use the factories for arrays and host tensors.
     */
    public record Entry(String name, String dtype, int[] shape, Source source) {
        /** Fills {@code dst} (exactly the entry's byte size) with the tensor's little-endian bytes. */
        @FunctionalInterface
        public interface Source {
            void fill(MemorySegment dst);
        }

        public Entry {
            if (name == null || name.isEmpty() || name.equals(METADATA_KEY)) {
                throw new IllegalArgumentException("invalid tensor name: " + name);
            }
            if (StoredType.parse(dtype) == null) throw new IllegalArgumentException(name + ": unknown dtype " + dtype);
            shape = shape.clone();
            Tensor.count(shape); // rejects negative dimensions
        }

        @Override
        public int[] shape() {
            return shape.clone();
        }

        public long byteSize() {
            return Tensor.count(shape) * StoredType.parse(dtype).bytes;
        }

        public static Entry f32(String name, int[] shape, float[] values) {
            checkLength(name, shape, values.length);
            return new Entry(name, "F32", shape, dst -> MemorySegment.copy(values, 0, dst, LE_FLOAT, 0, values.length));
        }

        /** Stores floats as bfloat16, rounding to nearest even. */
        public static Entry bf16(String name, int[] shape, float[] values) {
            checkLength(name, shape, values.length);
            return new Entry(name, "BF16", shape, dst -> {
                for (int i = 0; i < values.length; i++) dst.setAtIndex(LE_SHORT, i, floatToBf16(values[i]));
            });
        }

        public static Entry i32(String name, int[] shape, int[] values) {
            checkLength(name, shape, values.length);
            return new Entry(name, "I32", shape, dst -> MemorySegment.copy(values, 0, dst, LE_INT, 0, values.length));
        }

        public static Entry i64(String name, int[] shape, long[] values) {
            checkLength(name, shape, values.length);
            return new Entry(name, "I64", shape, dst -> MemorySegment.copy(values, 0, dst, LE_LONG, 0, values.length));
        }

        /** A host-memory tensor stored in its own dtype (F32, BF16, I32 or I8). */
        public static Entry of(String name, Tensor t) {
            ValueLayout layout = switch (t.dtype()) {
                case F32 -> ValueLayout.JAVA_FLOAT;
                case BF16 -> ValueLayout.JAVA_SHORT;
                case I32 -> ValueLayout.JAVA_INT;
                case I8 -> ValueLayout.JAVA_BYTE;
            };
            ValueLayout le = layout.withOrder(ByteOrder.LITTLE_ENDIAN);
            return new Entry(name, t.dtype().name(), t.shape(), dst -> MemorySegment.copy(t.data(), layout, 0, dst, le, 0, t.size()));
        }

        private static void checkLength(String name, int[] shape, int length) {
            if (Tensor.count(shape) != length) {
                throw new IllegalArgumentException(name + ": " + length + " values for shape " + Arrays.toString(shape));
            }
        }
    }

    /**
     * Writes {@code tensors} and {@code metadata} to {@code file}, atomically replacing any existing file. Tensors are
     * laid out widest dtype first (as HF does) so every tensor is aligned to its element size without gaps.
     */
    public static void write(Path file, Map<String, String> metadata, List<Entry> tensors) {
        List<Entry> order = new ArrayList<>(tensors);
        order.sort(Comparator.comparingInt((Entry e) -> StoredType.parse(e.dtype).bytes).reversed()); // stable

        ObjectNode header = JsonFiles.MAPPER.createObjectNode();
        if (!metadata.isEmpty()) {
            ObjectNode meta = header.putObject(METADATA_KEY);
            metadata.forEach(meta::put);
        }
        Set<String> seen = new HashSet<>();
        long offset = 0;
        for (Entry e : order) {
            if (!seen.add(e.name)) throw new IllegalArgumentException("duplicate tensor name " + e.name);
            ObjectNode t = header.putObject(e.name);
            t.put("dtype", e.dtype);
            ArrayNode shape = t.putArray("shape");
            for (int d : e.shape) shape.add(d);
            t.putArray("data_offsets").add(offset).add(offset + e.byteSize());
            offset += e.byteSize();
        }
        byte[] json = headerBytes(header);

        AtomicFile.write(file, out -> {
            ByteBuffer prefix = ByteBuffer.allocate(8 + json.length).order(ByteOrder.LITTLE_ENDIAN);
            prefix.putLong(json.length).put(json).flip();
            writeFully(out, prefix);
            for (Entry e : order) {
                try (Arena staging = Arena.ofConfined()) {
                    MemorySegment buf = staging.allocate(e.byteSize(), 8);
                    e.source.fill(buf);
                    for (long off = 0; off < buf.byteSize(); off += WRITE_CHUNK) {
                        writeFully(out, buf.asSlice(off, Math.min(WRITE_CHUNK, buf.byteSize() - off)).asByteBuffer());
                    }
                }
            }
        });
    }

    /** ByteBuffers address at most 2 GiB, so big tensors are written in pieces. */
    private static final long WRITE_CHUNK = 1L << 30;

    /** The header JSON padded with spaces to a multiple of 8 bytes, so the data area starts 8-aligned. */
    private static byte[] headerBytes(ObjectNode header) {
        byte[] raw;
        try {
            raw = JsonFiles.MAPPER.writeValueAsBytes(header);
        } catch (IOException e) {
            throw new IllegalStateException("cannot serialize safetensors header", e);
        }
        byte[] padded = Arrays.copyOf(raw, (raw.length + 7) & ~7);
        Arrays.fill(padded, raw.length, padded.length, (byte) ' ');
        return padded;
    }

    private static void writeFully(FileChannel out, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) out.write(b);
    }

    // ---------------------------------------------------------------- bfloat16

    private static float bf16ToFloat(short bits) {
        return Float.intBitsToFloat(bits << 16);
    }

    /** Round to nearest even; NaNs stay NaN (truncation alone could turn a NaN into infinity). */
    private static short floatToBf16(float f) {
        int bits = Float.floatToRawIntBits(f);
        if (Float.isNaN(f)) return (short) ((bits >>> 16) | 0x0040);
        return (short) ((bits + 0x7FFF + ((bits >>> 16) & 1)) >>> 16);
    }
}
