package frugal.data;

import frugal.FrugalException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.Random;
import java.util.function.Consumer;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class TokenFileTest {
    @TempDir
    Path dir;

    private final long seed = System.nanoTime();
    private final Random random = new Random(seed);

    @Test
    void roundTripsSixteenAndThirtyTwoBitTokens() {
        int[] small = random.ints(10_000, 0, 50257).toArray();
        small[0] = 50256;
        Path f16 = writeTokens("small", BpeTokenizer.gpt2(), small);
        assertEquals(TokenFile.HEADER + 2L * small.length, size(f16), "GPT-2 ids fit in uint16");
        TokenFile read = TokenFile.open(f16);
        assertEquals("gpt2", read.tokenizer());
        assertEquals(50257, read.vocabSize());
        assertArrayEquals(small, read.tokens().toArray(0, small.length), "seed " + seed);
        assertEquals(small[1234], read.tokens().get(1234));

        Tokenizer wide = new CountingTokenizer(ByteTokenizer.instance(), "wide", 100_000);
        int[] big = random.ints(3_000, 0, 100_000).toArray();
        Path f32 = writeTokens("big", wide, big);
        assertEquals(TokenFile.HEADER + 4L * big.length, size(f32));
        assertArrayEquals(big, TokenFile.open(f32).tokens().toArray(0, big.length), "seed " + seed);

        Path empty = writeTokens("empty", BpeTokenizer.gpt2());
        assertEquals(0, TokenFile.open(empty).tokens().size());
        assertTrue(TokenFile.looksLike(f16));
    }

    @Test
    void damagedFilesAreErrorsNamingTheFile() throws IOException {
        int[] ids = random.ints(5_000, 0, 257).toArray();
        Path good = writeTokens("good", ByteTokenizer.instance(), ids);
        byte[] bytes = Files.readAllBytes(good);

        byte[] flipped = bytes.clone();
        flipped[TokenFile.HEADER + 777] ^= 0x01;
        assertCorrupt(Files.write(dir.resolve("flipped.tokens"), flipped), "checksum");

        byte[] truncated = Arrays.copyOf(bytes, bytes.length - 3);
        assertCorrupt(Files.write(dir.resolve("truncated.tokens"), truncated), "truncated");

        assertCorrupt(Files.write(dir.resolve("stub.tokens"), Arrays.copyOf(bytes, 40)), "truncated");

        byte[] version = bytes.clone();
        version[8] = 9;
        assertCorrupt(Files.write(dir.resolve("version.tokens"), version), "version 9");

        Path text = Files.writeString(dir.resolve("text.tokens"), "hello ".repeat(100));
        assertCorrupt(text, "not a Frugal token file");
        assertFalse(TokenFile.looksLike(text));

        assertCorrupt(dir.resolve("missing.tokens"), "no such file");
    }

    @Test
    void secondLoadMapsTheCacheWithoutTokenizing() throws IOException {
        Path corpusDir = Files.createDirectories(dir.resolve("corpus"));
        for (int i = 0; i < 5; i++) Files.writeString(corpusDir.resolve(i + ".txt"), "Document " + i + " says hello world.\n");
        TokenCache cache = new TokenCache(dir.resolve("cache"));
        CountingTokenizer tok = new CountingTokenizer(BpeTokenizer.gpt2());

        Tokens first = cache.load(Corpus.open(corpusDir, 0), tok, null);
        int encodes = tok.encodes.get();
        assertTrue(encodes >= 5, "first load tokenizes every document: " + encodes);
        Path cached = cache.fileFor(Corpus.open(corpusDir, 0), tok);
        assertTrue(Files.isRegularFile(cached));
        try (Stream<Path> files = Files.list(cache.dir())) {
            assertEquals(1, files.count(), "no temporary files left behind");
        }

        Tokens second = cache.load(Corpus.open(corpusDir, 0), tok, null);
        assertEquals(encodes, tok.encodes.get(), "the second load must not tokenize");
        assertArrayEquals(first.toArray(0, first.size()), second.toArray(0, second.size()));
        assertArrayEquals(CorpusEncoder.encodeAll(Corpus.open(corpusDir, 0), BpeTokenizer.gpt2()), second.toArray(0, second.size()));

        // Different cap, different tokenizer or changed content: different cache entry, tokenized again.
        assertNotEquals(cached, cache.fileFor(Corpus.open(corpusDir, 10), tok));
        assertNotEquals(cached, cache.fileFor(Corpus.open(corpusDir, 0), ByteTokenizer.instance()));
        Files.writeString(corpusDir.resolve("0.txt"), "Changed and longer than before.\n");
        Tokens third = cache.load(Corpus.open(corpusDir, 0), tok, null);
        assertTrue(tok.encodes.get() > encodes, "changed content must be re-tokenized");
        assertNotEquals(first.get(1), third.get(1), "the new first word");
    }

    @Test
    void aDamagedCacheFileIsRebuilt() throws IOException {
        Path corpusFile = Files.writeString(dir.resolve("doc.txt"), "some text worth caching");
        TokenCache cache = new TokenCache(dir.resolve("cache"));
        CountingTokenizer tok = new CountingTokenizer(ByteTokenizer.instance());
        Tokens loaded = cache.load(Corpus.open(corpusFile, 0), tok, null);
        int[] good = loaded.toArray(0, loaded.size()); // copied: the mapping must not see the damage below
        Path cached = cache.fileFor(Corpus.open(corpusFile, 0), tok);
        try (FileChannel ch = FileChannel.open(cached, StandardOpenOption.WRITE)) {
            ch.truncate(Files.size(cached) - 4);
        }
        int before = tok.encodes.get();
        ByteArrayOutputStream log = new ByteArrayOutputStream();
        Tokens rebuilt = cache.load(Corpus.open(corpusFile, 0), tok, new PrintStream(log, true, StandardCharsets.UTF_8));
        assertTrue(tok.encodes.get() > before, "re-tokenized");
        assertTrue(log.toString(StandardCharsets.UTF_8).contains("re-tokenizing"), log.toString(StandardCharsets.UTF_8));
        assertArrayEquals(good, rebuilt.toArray(0, rebuilt.size()));
        assertEquals(good.length, TokenFile.open(cached).tokens().size(), "the cache file was rewritten");
    }

    @Test
    void aUserSuppliedTokenFileIsUsedAsIsButMustBeValid() throws IOException {
        int[] ids = random.ints(2_000, 0, 257).toArray();
        Path file = writeTokens("mine", ByteTokenizer.instance(), ids);
        TokenCache cache = new TokenCache(dir.resolve("cache"));
        Tokens tokens = Batches.tokens(file, ByteTokenizer.instance(), 0, cache, null);
        assertArrayEquals(ids, tokens.toArray(0, tokens.size()));

        FrugalException e = assertThrows(FrugalException.class, () -> Batches.tokens(file, BpeTokenizer.gpt2(), 0, cache, null));
        assertTrue(e.getMessage().contains(file.toString()) && e.getMessage().contains("tokenized with byte"), e.getMessage());

        byte[] bytes = Files.readAllBytes(file);
        bytes[bytes.length - 1] ^= 0x40;
        Files.write(file, bytes);
        e = assertThrows(FrugalException.class, () -> Batches.tokens(file, ByteTokenizer.instance(), 0, cache, null));
        assertTrue(e.getMessage().contains(file.toString()) && e.getMessage().contains("checksum"), e.getMessage());
    }

    private void assertCorrupt(Path file, String why) {
        FrugalException e = assertThrows(FrugalException.class, () -> TokenFile.open(file));
        assertTrue(e.getMessage().startsWith(file.toString()) && e.getMessage().contains(why), e.getMessage());
    }

    private Path writeTokens(String name, Tokenizer tokenizer, int[]... chunks) {
        Path file = dir.resolve(name + TokenFile.EXTENSION);
        long count = TokenFile.write(file, tokenizer, (Consumer<int[]> sink) -> {
            for (int[] c : chunks) sink.accept(c);
        });
        assertEquals(Stream.of(chunks).mapToLong(c -> c.length).sum(), count);
        return file;
    }

    private static long size(Path p) {
        try {
            return Files.size(p);
        } catch (IOException e) {
            throw new AssertionError(e);
        }
    }
}
