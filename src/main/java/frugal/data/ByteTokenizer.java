package frugal.data;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;

/** One token per UTF-8 byte (ids 0..255) plus an end-of-text token 256: no merges, nothing to load. */
public final class ByteTokenizer implements Tokenizer {
    public static final String NAME = "byte";
    private static final int END_OF_TEXT = 256;
    private static final byte[] END_OF_TEXT_TEXT = "<|endoftext|>".getBytes(StandardCharsets.US_ASCII);
    private static final byte[] REPLACEMENT = {(byte) 0xEF, (byte) 0xBF, (byte) 0xBD};
    private static final ByteTokenizer INSTANCE = new ByteTokenizer();

    private ByteTokenizer() {
    }

    public static ByteTokenizer instance() {
        return INSTANCE;
    }

    @Override
    public int[] encode(String text) {
        byte[] bytes = text.getBytes(StandardCharsets.UTF_8);
        int[] ids = new int[bytes.length];
        for (int i = 0; i < bytes.length; i++) ids[i] = bytes[i] & 0xFF;
        return ids;
    }

    @Override
    public byte[] decodeBytes(int[] ids) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(ids.length);
        for (int id : ids) {
            if (id >= 0 && id < 256) out.write(id);
            else out.writeBytes(id == END_OF_TEXT ? END_OF_TEXT_TEXT : REPLACEMENT);
        }
        return out.toByteArray();
    }

    @Override
    public int vocabSize() {
        return 257;
    }

    @Override
    public int endOfText() {
        return END_OF_TEXT;
    }

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public String toString() {
        return NAME;
    }
}
