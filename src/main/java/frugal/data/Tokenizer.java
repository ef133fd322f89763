package frugal.data;

import java.nio.charset.StandardCharsets;

/**
 * Text ↔ token ids. Implementations are immutable and safe to share between threads (the corpus is
 * tokenized in parallel with one instance).
 */
public interface Tokenizer {
    /** Token ids of {@code text}. Special-token spellings such as "<|endoftext|>" are encoded as plain text. */
    int[] encode(String text);

    /**
     * The UTF-8 bytes the ids stand for. A single id may be part of a multi-byte character, which is why
     * streaming output goes through {@link StreamDecoder}. Ids outside the vocabulary (a model's padded
     * embedding rows can be sampled) become U+FFFD rather than an error.
     */
    byte[] decodeBytes(int[] ids);

    /** The text of {@code ids}; bytes that do not form whole characters become U+FFFD. */
    default String decode(int[] ids) {
        return new String(decodeBytes(ids), StandardCharsets.UTF_8);
    }

    /** The text of one token; for generated output prefer {@link StreamDecoder}, which keeps characters whole. */
    default String decode(int id) {
        return decode(new int[]{id});
    }

    /** Number of ids, i.e. every id is in [0, vocabSize()). */
    int vocabSize();

    /** The id that separates documents. */
    int endOfText();

    /** The name {@link Tokenizers#byName} knows this tokenizer by; recorded in token files and checkpoints. */
    String name();
}
