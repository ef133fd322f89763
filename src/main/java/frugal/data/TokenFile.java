package frugal.data;

import frugal.FrugalException;
import frugal.io.AtomicFile;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.function.Consumer;
import java.util.zip.CRC32C;

/**
 * A tokenized corpus on disk, read back by memory-mapping. Layout (little-endian):
 * <pre>
 *   0  magic "FRUGALTK"        8  int32 version (1)     12 int32 bytes per token (2 = uint16, 4 = int32)
 *   16 int32 vocab size        20 int32 name length     24 tokenizer name, UTF-8, 64 bytes zero-padded
 *   88 int64 token count       96 int32 CRC-32C of the tokens      100..127 zero
 *   128 tokens
 * </pre>
 * uint16 is used whenever the vocabulary fits (GPT-2's does), halving the file. The checksum catches a
 * damaged file before a bad id reaches an embedding lookup.
 */
public final class TokenFile {
    public static final String EXTENSION = ".tokens";
    static final int HEADER = 128, VERSION = 1, NAME_BYTES = 64;
    private static final byte[] MAGIC = "FRUGALTK".getBytes(StandardCharsets.US_ASCII);

    /** Produces the tokens of a file in order, in chunks of any size. */
    @FunctionalInterface
    public interface Chunks {
        void forEach(Consumer<int[]> sink);
    }

    private final Path path;
    private final String tokenizer;
    private final int vocabSize;
    private final Tokens tokens;

    private TokenFile(Path path, String tokenizer, int vocabSize, Tokens tokens) {
        this.path = path;
        this.tokenizer = tokenizer;
        this.vocabSize = vocabSize;
        this.tokens = tokens;
    }

    public Path path() {
        return path;
    }

    /** Name of the tokenizer that produced the tokens (see {@link Tokenizers#byName}). */
    public String tokenizer() {
        return tokenizer;
    }

    public int vocabSize() {
        return vocabSize;
    }

    public Tokens tokens() {
        return tokens;
    }

    /** Whether {@code file} starts like a token file (so a --data argument can be one). */
    public static boolean looksLike(Path file) {
        if (!Files.isRegularFile(file)) return false;
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            ByteBuffer head = ByteBuffer.allocate(MAGIC.length);
            while (head.hasRemaining() && ch.read(head) >= 0) {
                // keep reading: a channel may return fewer bytes than asked
            }
            return Arrays.equals(head.array(), MAGIC);
        } catch (IOException e) {
            return false;
        }
    }

    /**
     * Writes the tokens {@code chunks} produces to {@code target} atomically (see {@link AtomicFile}); the
     * count and checksum go into the header once all are written. Returns the number of tokens.
     */
    public static long write(Path target, Tokenizer tokenizer, Chunks chunks) {
        byte[] name = tokenizer.name().getBytes(StandardCharsets.UTF_8);
        if (name.length == 0 || name.length > NAME_BYTES) throw new IllegalArgumentException("tokenizer name " + tokenizer.name());
        int vocab = tokenizer.vocabSize(), width = vocab <= 65536 ? 2 : 4;
        long[] count = {0};
        AtomicFile.write(target, out -> {
            CRC32C crc = new CRC32C();
            ByteBuffer buf = ByteBuffer.allocateDirect(1 << 20).order(ByteOrder.LITTLE_ENDIAN);
            out.position(HEADER);
            IOException[] failure = {null};
            chunks.forEach(ids -> {
                if (failure[0] != null) return;
                try {
                    for (int id : ids) {
                        if (id < 0 || id >= vocab) throw new IllegalStateException("token " + id + " outside vocabulary " + vocab);
                        if (buf.remaining() < width) flush(out, buf, crc);
                        if (width == 2) buf.putShort((short) id);
                        else buf.putInt(id);
                    }
                    count[0] += ids.length;
                } catch (IOException e) {
                    failure[0] = e;
                }
            });
            if (failure[0] != null) throw failure[0];
            flush(out, buf, crc);
            ByteBuffer header = ByteBuffer.allocate(HEADER).order(ByteOrder.LITTLE_ENDIAN);
            header.put(MAGIC).putInt(VERSION).putInt(width).putInt(vocab).putInt(name.length).put(name)
                    .position(88);
            header.putLong(count[0]).putInt((int) crc.getValue()).position(HEADER).flip();
            while (header.hasRemaining()) out.write(header, header.position());
        });
        return count[0];
    }

    private static void flush(FileChannel out, ByteBuffer buf, CRC32C crc) throws IOException {
        buf.flip();
        crc.update(buf.duplicate());
        while (buf.hasRemaining()) out.write(buf);
        buf.clear();
    }

    /** Maps and validates {@code file}; anything wrong with it is a {@link FrugalException} naming it. */
    public static TokenFile open(Path file) {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            long size = ch.size();
            if (size < HEADER) throw corrupt(file, "truncated: " + size + " bytes, shorter than the " + HEADER + "-byte header");
            ByteBuffer h = ByteBuffer.allocate(HEADER).order(ByteOrder.LITTLE_ENDIAN);
            while (h.hasRemaining()) if (ch.read(h, h.position()) < 0) throw corrupt(file, "truncated header");
            h.flip();
            byte[] magic = new byte[MAGIC.length];
            h.get(magic);
            if (!Arrays.equals(magic, MAGIC)) throw new FrugalException(file + ": not a Frugal token file (bad magic)");
            int version = h.getInt(), width = h.getInt(), vocab = h.getInt(), nameLength = h.getInt();
            if (version != VERSION) throw corrupt(file, "format version " + version + ", this build reads " + VERSION);
            if (width != 2 && width != 4) throw corrupt(file, "bytes per token is " + width + ", expected 2 or 4");
            if (vocab <= 0 || (width == 2 && vocab > 65536)) throw corrupt(file, "vocabulary size " + vocab + " does not fit " + width + "-byte tokens");
            if (nameLength <= 0 || nameLength > NAME_BYTES) throw corrupt(file, "tokenizer name length " + nameLength);
            byte[] name = new byte[nameLength];
            h.get(name);
            long count = h.getLong(88);
            int storedCrc = h.getInt(96);
            if (count < 0 || count > (Long.MAX_VALUE - HEADER) / width) throw corrupt(file, "token count " + count);
            long expected = HEADER + count * width;
            if (size != expected) {
                throw corrupt(file, String.format("%s: the header promises %,d tokens (%,d bytes) but the file has %,d bytes",
                        size < expected ? "truncated" : "trailing bytes", count, expected, size));
            }
            MemorySegment data = count == 0 ? MemorySegment.ofArray(new byte[0])
                    : ch.map(FileChannel.MapMode.READ_ONLY, HEADER, count * width, Arena.ofAuto());
            if (crc32c(data) != storedCrc) throw corrupt(file, "checksum mismatch, the tokens are damaged");
            return new TokenFile(file, new String(name, StandardCharsets.UTF_8), vocab, Tokens.view(data, width));
        } catch (IOException e) {
            throw new FrugalException(file + ": cannot read token file (" + Corpus.why(e) + ")", e);
        }
    }

    private static int crc32c(MemorySegment data) {
        CRC32C crc = new CRC32C();
        for (long at = 0; at < data.byteSize(); at += 1 << 30) {
            crc.update(data.asSlice(at, Math.min(1L << 30, data.byteSize() - at)).asByteBuffer());
        }
        return (int) crc.getValue();
    }

    private static FrugalException corrupt(Path file, String why) {
        return new FrugalException(file + ": corrupt token file (" + why + ")");
    }
}
