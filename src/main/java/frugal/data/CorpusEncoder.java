package frugal.data;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.function.Consumer;

/**
 * Tokenizes a corpus on every core: documents are gathered into batches of a few MB and the batch's
 * pieces are encoded by a parallel stream, in order. Every document is preceded by the end-of-text token,
 * so the model learns that a document starts after it (and generation can start from it).
 */
public final class CorpusEncoder {
    /** Bumped whenever the token stream for the same corpus would change; part of the cache key. */
    public static final int VERSION = 1;
    private static final int BATCH_CHARS = 4 << 20;
    private static final int PIECE_CHARS = 256 << 10;

    private CorpusEncoder() {
    }

    /** Passes the corpus's tokens to {@code sink} in order, in chunks; returns what was read. */
    public static Corpus.Stats encode(Corpus corpus, Tokenizer tokenizer, Consumer<int[]> sink) {
        List<String> pieces = new ArrayList<>();
        List<Boolean> starts = new ArrayList<>(); // whether the piece begins a document
        long[] chars = {0};
        Corpus.Stats stats = corpus.read(doc -> {
            List<String> split = pieces(doc, PIECE_CHARS);
            for (int i = 0; i < split.size(); i++) {
                pieces.add(split.get(i));
                starts.add(i == 0);
            }
            chars[0] += doc.length();
            if (chars[0] >= BATCH_CHARS) {
                sink.accept(encodeBatch(tokenizer, pieces, starts));
                pieces.clear();
                starts.clear();
                chars[0] = 0;
            }
        });
        if (!pieces.isEmpty()) sink.accept(encodeBatch(tokenizer, pieces, starts));
        return stats;
    }

    /** Tokens of the whole corpus in memory; for small corpora and tests. */
    public static int[] encodeAll(Corpus corpus, Tokenizer tokenizer) {
        IntList all = new IntList();
        encode(corpus, tokenizer, all::add);
        return all.toArray();
    }

    private static int[] encodeBatch(Tokenizer tokenizer, List<String> pieces, List<Boolean> starts) {
        List<int[]> encoded = pieces.parallelStream().map(tokenizer::encode).toList();
        IntList out = new IntList();
        for (int i = 0; i < encoded.size(); i++) {
            if (starts.get(i)) out.add(new int[]{tokenizer.endOfText()});
            out.add(encoded.get(i));
        }
        return out.toArray();
    }

    /**
     * Cuts a long document into pieces of about {@code size} chars so that one huge file still spreads over
     * the cores. Cuts fall only right after a single '\n' that sits between two printable ASCII characters:
     * GPT-2's pre-tokenizer then yields the same pieces ("…x", "\n", "y…") whether or not the text is cut
     * there, so the tokens are identical to encoding the document whole.
     */
    static List<String> pieces(String doc, int size) {
        if (doc.length() <= size) return List.of(doc);
        List<String> out = new ArrayList<>();
        int start = 0;
        for (int i = start + size; i < doc.length() - 1; i++) {
            if (doc.charAt(i) == '\n' && printable(doc.charAt(i - 1)) && printable(doc.charAt(i + 1))) {
                out.add(doc.substring(start, i + 1));
                start = i + 1;
                i = start + size - 1;
            }
        }
        out.add(doc.substring(start));
        return out;
    }

    private static boolean printable(char c) {
        return c > ' ' && c < 0x7F;
    }

    /** A growable int array, to avoid boxing millions of tokens. */
    static final class IntList {
        private int[] a = new int[1024];
        private int n;

        void add(int[] ids) {
            if (n + ids.length > a.length) a = Arrays.copyOf(a, Math.max(a.length * 2, n + ids.length));
            System.arraycopy(ids, 0, a, n, ids.length);
            n += ids.length;
        }

        int[] toArray() {
            return Arrays.copyOf(a, n);
        }
    }
}
