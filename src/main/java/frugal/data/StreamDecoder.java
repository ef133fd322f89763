package frugal.data;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;

/**
 * Turns tokens into text one at a time, for printing while generating. BPE and byte tokens can end in the
 * middle of a multi-byte UTF-8 character; those trailing bytes are held back until the character is
 * complete instead of being printed as U+FFFD.
 */
public final class StreamDecoder {
    private final Tokenizer tokenizer;
    private final ByteArrayOutputStream pending = new ByteArrayOutputStream();

    public StreamDecoder(Tokenizer tokenizer) {
        this.tokenizer = tokenizer;
    }

    /** The text that {@code id} completes; may be empty. */
    public String next(int id) {
        pending.writeBytes(tokenizer.decodeBytes(new int[]{id}));
        byte[] bytes = pending.toByteArray();
        int cut = completePrefix(bytes);
        pending.reset();
        pending.write(bytes, cut, bytes.length - cut);
        return new String(bytes, 0, cut, StandardCharsets.UTF_8);
    }

    /** Whatever is still held back (an unfinished character decodes as U+FFFD). */
    public String flush() {
        String rest = pending.toString(StandardCharsets.UTF_8);
        pending.reset();
        return rest;
    }

    /** Length of the longest prefix that does not end inside a character that could still be completed. */
    static int completePrefix(byte[] b) {
        int n = b.length;
        // A character is at most 4 bytes, so only the last 3 can belong to an unfinished one.
        for (int i = n - 1; i >= Math.max(0, n - 3); i--) {
            int v = b[i] & 0xFF;
            if ((v & 0xC0) == 0x80) continue; // continuation byte: keep looking for its lead byte
            int length = v >= 0xF0 ? 4 : v >= 0xE0 ? 3 : v >= 0xC0 ? 2 : 1;
            return n - i < length && v < 0xF8 ? i : n;
        }
        return n;
    }
}
