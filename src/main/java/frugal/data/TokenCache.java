package frugal.data;

import frugal.FrugalException;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;

/**
 * Tokenized corpora kept as {@link TokenFile}s so that a second run maps the tokens instead of
 * re-tokenizing. The file name carries a hash of everything the tokens depend on: the corpus's paths,
 * sizes and modification times, the byte cap, the tokenizer and the pipeline version. A cache file that
 * fails validation is simply rebuilt.
 */
public final class TokenCache {
    private final Path dir;

    public TokenCache(Path dir) {
        this.dir = dir;
    }

    /** $FRUGAL_CACHE/tokens (or the frugal.cache system property), else ~/.cache/frugal/tokens. */
    public static Path defaultDir() {
        String base = System.getProperty("frugal.cache", System.getenv("FRUGAL_CACHE"));
        Path root = base != null && !base.isBlank() ? Path.of(base)
                : Path.of(System.getProperty("user.home"), ".cache", "frugal");
        return root.resolve("tokens");
    }

    public Path dir() {
        return dir;
    }

    /** Where the tokens of {@code corpus} under {@code tokenizer} are (or would be) cached. */
    public Path fileFor(Corpus corpus, Tokenizer tokenizer) {
        String key = "frugal-tokens\n" + corpus.fingerprint() + "tokenizer=" + tokenizer.name()
                + " vocab=" + tokenizer.vocabSize() + " pipeline=" + CorpusEncoder.VERSION;
        String stem = corpus.path().getFileName() == null ? "corpus"
                : corpus.path().getFileName().toString().replaceAll("[^A-Za-z0-9._-]", "_");
        if (stem.length() > 40) stem = stem.substring(0, 40);
        return dir.resolve(stem + "-" + tokenizer.name() + "-" + sha256(key).substring(0, 16) + TokenFile.EXTENSION);
    }

    /** The corpus's tokens: mapped from the cache when present and valid, else tokenized (and cached). */
    public Tokens load(Corpus corpus, Tokenizer tokenizer, PrintStream log) {
        Path file = fileFor(corpus, tokenizer);
        if (Files.exists(file)) {
            try {
                TokenFile cached = TokenFile.open(file);
                if (cached.tokenizer().equals(tokenizer.name()) && cached.vocabSize() == tokenizer.vocabSize()) {
                    print(log, "data: %s: %,d %s tokens (cached in %s)%n", corpus.describe(), cached.tokens().size(),
                            tokenizer.name(), file);
                    return cached.tokens();
                }
                print(log, "data: %s was written by another tokenizer; re-tokenizing%n", file);
            } catch (FrugalException e) {
                print(log, "data: ignoring the cache file: %s; re-tokenizing%n", e.getMessage());
            }
        }
        long start = System.nanoTime();
        Corpus.Stats[] stats = {null};
        Tokens tokens;
        if (writable()) {
            TokenFile.write(file, tokenizer, sink -> stats[0] = CorpusEncoder.encode(corpus, tokenizer, sink));
            tokens = TokenFile.open(file).tokens();
        } else {
            print(log, "data: cannot write the token cache %s; tokenizing in memory only%n", dir);
            CorpusEncoder.IntList all = new CorpusEncoder.IntList();
            stats[0] = CorpusEncoder.encode(corpus, tokenizer, all::add);
            tokens = Tokens.of(all.toArray());
        }
        double seconds = (System.nanoTime() - start) / 1e9;
        print(log, "data: %s: %,d documents, %,d bytes → %,d %s tokens in %.1f s (%,.0f tokens/s)%s%n",
                corpus.describe(), stats[0].documents(), stats[0].bytes(), tokens.size(), tokenizer.name(), seconds,
                tokens.size() / seconds, stats[0].skipped() > 0 ? String.format("; %,d binary files skipped", stats[0].skipped()) : "");
        return tokens;
    }

    private boolean writable() {
        try {
            Files.createDirectories(dir);
            return Files.isWritable(dir);
        } catch (IOException e) {
            return false;
        }
    }

    private static void print(PrintStream log, String format, Object... args) {
        if (log != null) log.printf(format, args);
    }

    private static String sha256(String s) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(s.getBytes(StandardCharsets.UTF_8)));
        } catch (NoSuchAlgorithmException e) {
            throw new AssertionError("every JDK has SHA-256", e);
        }
    }
}
