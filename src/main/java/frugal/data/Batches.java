package frugal.data;

import frugal.FrugalException;

import java.io.PrintStream;
import java.nio.file.Path;

/**
 * Training and validation batches from a token stream.
 * <p>
 * Split: the last {@code valFraction} of the stream (rounded up) is validation, the rest training. A
 * contiguous tail (rather than interleaved chunks) keeps the two sets from sharing any window or document
 * interior; with files read in path order it is the last files' text.
 * <p>
 * Training: the training part is cut into non-overlapping windows of seq+1 tokens (inputs are the first
 * seq, targets the last seq). Each epoch visits every window once, in an order that is a permutation
 * drawn from (seed, epoch) alone, so the position is fully described by {@link State} and a resumed run
 * continues with exactly the batches an uninterrupted one would have seen. A batch may straddle epochs.
 * <p>
 * Validation: the validation part cut the same way, in order, never shuffled.
 */
public final class Batches {
    public static final double DEFAULT_VAL_FRACTION = 0.1;

    /** The training position: which permutation (seed, epoch) and how far into it; windows guards against changed data. */
    public record State(long seed, long epoch, long index, long windows) {
        /** A compact text form for checkpoint metadata: "seed=…,epoch=…,index=…,windows=…". */
        @Override
        public String toString() {
            return "seed=" + seed + ",epoch=" + epoch + ",index=" + index + ",windows=" + windows;
        }

        public static State parse(String text) {
            try {
                long[] v = new long[4];
                String[] keys = {"seed", "epoch", "index", "windows"};
                String[] parts = text.split(",");
                if (parts.length != 4) throw new IllegalArgumentException();
                for (int i = 0; i < 4; i++) {
                    String[] kv = parts[i].split("=", 2);
                    if (kv.length != 2 || !kv[0].trim().equals(keys[i])) throw new IllegalArgumentException();
                    v[i] = Long.parseLong(kv[1].trim());
                }
                return new State(v[0], v[1], v[2], v[3]);
            } catch (RuntimeException e) {
                throw new FrugalException("unreadable data position '" + text + "': expected seed=…,epoch=…,index=…,windows=…");
            }
        }
    }

    private final Tokens tokens;
    private final int batch, seq;
    private final long trainEnd;
    private final int windows;
    private final int[] window;
    private long seed, epoch, index;
    private int[] order;
    private int[] validation;

    /**
     * @param valFraction share of the stream held out for validation, in [0, 1); when positive the
     *                    validation part holds at least one window
     */
    public Batches(Tokens tokens, int batch, int seq, double valFraction, long seed) {
        if (batch <= 0 || seq <= 0) throw new FrugalException("batch and sequence length must be positive, got " + batch + " and " + seq);
        if (!(valFraction >= 0 && valFraction < 1)) throw new FrugalException("validation fraction must be in [0, 1), got " + valFraction);
        this.tokens = tokens;
        this.batch = batch;
        this.seq = seq;
        long n = tokens.size();
        if (!fits(n, batch, seq, valFraction)) {
            throw new FrugalException(String.format("the corpus has %,d tokens, too few for batch %d × sequence %d: "
                            + "training needs %d windows of %d tokens%s, at least %,d tokens in all; use more data or a smaller batch or sequence length",
                    n, batch, seq, batch, seq + 1,
                    valFraction > 0 ? String.format(" and validation (%.0f%%) one more", valFraction * 100) : "",
                    needed(batch, seq, valFraction)));
        }
        this.trainEnd = n - valTokens(n, valFraction);
        long w = trainEnd / (seq + 1);
        if (w > Integer.MAX_VALUE - 8) throw new FrugalException(String.format("%,d training windows is more than this loader can shuffle", w));
        this.windows = (int) w;
        this.window = new int[seq + 1];
        this.seed = seed;
    }

    /**
     * Tokens of {@code data} (a text file, folder or .zip, through the token cache; or a token file as is;
     * null: the JDK's src.zip) cut into batches with {@link #DEFAULT_VAL_FRACTION} held out.
     */
    public static Batches load(Path data, Tokenizer tokenizer, long maxBytes, int batch, int seq, long seed, PrintStream log) {
        Tokens tokens = tokens(data, tokenizer, maxBytes, new TokenCache(TokenCache.defaultDir()), log);
        try {
            return new Batches(tokens, batch, seq, DEFAULT_VAL_FRACTION, seed);
        } catch (FrugalException e) {
            throw new FrugalException((data != null ? data : Corpus.jdkSources()) + ": " + e.getMessage(), e);
        }
    }

    /** The tokens of {@code data}: a user's token file is validated strictly, a corpus goes through {@code cache}. */
    public static Tokens tokens(Path data, Tokenizer tokenizer, long maxBytes, TokenCache cache, PrintStream log) {
        if (data != null && TokenFile.looksLike(data)) {
            TokenFile file = TokenFile.open(data);
            if (!file.tokenizer().equals(tokenizer.name()) || file.vocabSize() != tokenizer.vocabSize()) {
                throw new FrugalException(data + ": tokenized with " + file.tokenizer() + " (vocabulary " + file.vocabSize()
                        + "), but this run uses " + tokenizer.name() + " (vocabulary " + tokenizer.vocabSize() + ")");
            }
            if (log != null) log.printf("data: %s: %,d %s tokens%n", data, file.tokens().size(), file.tokenizer());
            return file.tokens();
        }
        return cache.load(Corpus.open(data, maxBytes), tokenizer, log);
    }

    /** Fills {@code inputs} and {@code targets} (batch × seq each, row-major) with the next training batch. */
    public void nextTrain(int[] inputs, int[] targets) {
        checkCapacity(inputs, targets);
        for (int row = 0; row < batch; row++) {
            if (index == windows) {
                epoch++;
                index = 0;
                order = null;
            }
            if (order == null) order = permutation(windows, seed, epoch);
            long start = (long) order[(int) index++] * (seq + 1);
            tokens.copy(start, window, 0, seq + 1);
            System.arraycopy(window, 0, inputs, row * seq, seq);
            System.arraycopy(window, 1, targets, row * seq, seq);
        }
    }

    public State position() {
        return new State(seed, epoch, index, windows);
    }

    /** Continues from {@code state} (including its seed); the data must be the same as when it was taken. */
    public void restore(State state) {
        if (state.windows() != windows) {
            throw new FrugalException(String.format("the saved data position is for %,d training windows but this data has %,d: "
                    + "the data, byte cap, tokenizer or sequence length changed since the checkpoint", state.windows(), windows));
        }
        if (state.epoch() < 0 || state.index() < 0 || state.index() > windows) {
            throw new FrugalException("invalid data position " + state);
        }
        seed = state.seed();
        epoch = state.epoch();
        index = state.index();
        order = null;
    }

    /** {@link #position()} as text, for checkpoint metadata. */
    public String state() {
        return position().toString();
    }

    public void restore(String state) {
        restore(State.parse(state));
    }

    /** Number of validation batches; the last one may be partial. */
    public int valBatches() {
        return (int) ((valWindows() + batch - 1) / batch);
    }

    /** Fills validation batch {@code i} (in order) and returns how many rows it has (batch, or fewer for the last). */
    public int valBatch(int i, int[] inputs, int[] targets) {
        checkCapacity(inputs, targets);
        if (i < 0 || i >= valBatches()) throw new IndexOutOfBoundsException("validation batch " + i + " of " + valBatches());
        int rows = (int) Math.min(batch, valWindows() - (long) i * batch);
        for (int row = 0; row < rows; row++) {
            tokens.copy(trainEnd + ((long) i * batch + row) * (seq + 1), window, 0, seq + 1);
            System.arraycopy(window, 0, inputs, row * seq, seq);
            System.arraycopy(window, 1, targets, row * seq, seq);
        }
        return rows;
    }

    /** The validation tokens as one array (for an evaluator that cuts its own windows). */
    public int[] validation() {
        if (validation == null) validation = tokens.toArray(trainEnd, tokens.size());
        return validation;
    }

    public long trainTokens() {
        return trainEnd;
    }

    public long valTokens() {
        return tokens.size() - trainEnd;
    }

    public int trainWindows() {
        return windows;
    }

    public long valWindows() {
        return valTokens() / (seq + 1);
    }

    private void checkCapacity(int[] inputs, int[] targets) {
        int need = batch * seq;
        if (inputs.length < need || targets.length < need) {
            throw new IllegalArgumentException("inputs and targets need " + need + " elements, got " + inputs.length + " and " + targets.length);
        }
    }

    private static long valTokens(long n, double valFraction) {
        return (long) Math.ceil(n * valFraction);
    }

    private static boolean fits(long n, int batch, int seq, double valFraction) {
        long val = valTokens(n, valFraction);
        return (n - val) / (seq + 1) >= batch && (valFraction == 0 || val >= seq + 1);
    }

    /** The fewest tokens that fit (fits() only grows with n, so a binary search finds the edge). */
    static long needed(int batch, int seq, double valFraction) {
        long lo = 1, hi = 2;
        while (!fits(hi, batch, seq, valFraction)) hi *= 2;
        while (lo < hi) {
            long mid = (lo + hi) >>> 1;
            if (fits(mid, batch, seq, valFraction)) hi = mid;
            else lo = mid + 1;
        }
        return lo;
    }

    /** A Fisher–Yates shuffle driven by SplitMix64, defined here so the order never depends on the JDK's RNGs. */
    static int[] permutation(int n, long seed, long epoch) {
        int[] p = new int[n];
        for (int i = 0; i < n; i++) p[i] = i;
        long state = mix(seed) ^ mix(epoch + 0x632BE59BD9B4E019L);
        for (int i = n - 1; i > 0; i--) {
            state += 0x9E3779B97F4A7C15L;
            int j = (int) (((mix(state) >>> 32) * (i + 1)) >>> 32); // uniform in [0, i]
            int t = p[i];
            p[i] = p[j];
            p[j] = t;
        }
        return p;
    }

    private static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }
}
