package frugal.data;

import java.util.concurrent.atomic.AtomicInteger;

/** Wraps a tokenizer and counts encode calls, so a test can tell whether anything was tokenized. */
final class CountingTokenizer implements Tokenizer {
    final AtomicInteger encodes = new AtomicInteger();
    private final Tokenizer inner;
    private final String name;
    private final int vocab;

    CountingTokenizer(Tokenizer inner) {
        this(inner, inner.name(), inner.vocabSize());
    }

    /** A different name or a larger vocabulary than {@code inner} (to exercise 32-bit token files). */
    CountingTokenizer(Tokenizer inner, String name, int vocab) {
        this.inner = inner;
        this.name = name;
        this.vocab = vocab;
    }

    @Override
    public int[] encode(String text) {
        encodes.incrementAndGet();
        return inner.encode(text);
    }

    @Override
    public byte[] decodeBytes(int[] ids) {
        return inner.decodeBytes(ids);
    }

    @Override
    public int vocabSize() {
        return vocab;
    }

    @Override
    public int endOfText() {
        return inner.endOfText();
    }

    @Override
    public String name() {
        return name;
    }
}
