package frugal.data;

import com.knuddels.jtokkit.Encodings;
import com.knuddels.jtokkit.api.Encoding;
import com.knuddels.jtokkit.api.EncodingType;
import com.knuddels.jtokkit.api.IntArrayList;

import java.io.ByteArrayOutputStream;

/** GPT-2's byte-level BPE (tiktoken's r50k_base, through jtokkit): 50,257 ids, {@code <|endoftext|>} = 50256. */
public final class BpeTokenizer implements Tokenizer {
    public static final String NAME = "gpt2";
    private static final int VOCAB = 50257, END_OF_TEXT = 50256;
    private static final byte[] REPLACEMENT = {(byte) 0xEF, (byte) 0xBF, (byte) 0xBD};

    /** Loading the merge table takes a few hundred ms, so there is one shared (thread-safe) instance. */
    private static final class Holder {
        static final BpeTokenizer INSTANCE = new BpeTokenizer(
                Encodings.newLazyEncodingRegistry().getEncoding(EncodingType.R50K_BASE));
    }

    private final Encoding encoding;

    private BpeTokenizer(Encoding encoding) {
        this.encoding = encoding;
    }

    public static BpeTokenizer gpt2() {
        return Holder.INSTANCE;
    }

    @Override
    public int[] encode(String text) {
        // encodeOrdinary: a corpus that happens to contain "<|endoftext|>" must not throw or inject separators.
        return encoding.encodeOrdinary(text).toArray();
    }

    @Override
    public byte[] decodeBytes(int[] ids) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(ids.length * 4);
        IntArrayList run = new IntArrayList(ids.length);
        for (int id : ids) {
            if (id >= 0 && id < VOCAB) {
                run.add(id);
            } else {
                out.writeBytes(encoding.decodeBytes(run));
                run.clear();
                out.writeBytes(REPLACEMENT);
            }
        }
        out.writeBytes(encoding.decodeBytes(run));
        return out.toByteArray();
    }

    @Override
    public int vocabSize() {
        return VOCAB;
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
