package frugal.data;

import frugal.FrugalException;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Random;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

class TokenizerTest {
    private static final Path SHAKESPEARE = Path.of("/work/shared/data/tinyshakespeare.txt");
    private final long seed = System.nanoTime();
    private final Random random = new Random(seed);

    @Test
    void gpt2MatchesKnownEncodings() {
        Tokenizer gpt2 = Tokenizers.byName("gpt2");
        assertArrayEquals(new int[]{15496, 995}, gpt2.encode("Hello world"));
        assertArrayEquals(new int[]{40, 716, 257, 1332, 13}, gpt2.encode("I am a test."));
        assertEquals(50257, gpt2.vocabSize());
        assertEquals(50256, gpt2.endOfText());
        assertEquals("<|endoftext|>", gpt2.decode(new int[]{50256}));
        // Corpus text that spells the special token is ordinary text, never the separator.
        int[] literal = gpt2.encode("a <|endoftext|> b");
        assertFalse(IntStream.of(literal).anyMatch(id -> id == 50256));
        assertEquals("a <|endoftext|> b", gpt2.decode(literal));
    }

    @Test
    void gpt2RoundTripsRandomSlicesOfShakespeare() throws IOException {
        assumeTrue(Files.exists(SHAKESPEARE), "needs " + SHAKESPEARE);
        String text = Files.readString(SHAKESPEARE);
        Tokenizer gpt2 = BpeTokenizer.gpt2();
        for (int i = 0; i < 50; i++) {
            int start = random.nextInt(text.length() - 2000), end = start + 1 + random.nextInt(2000);
            String slice = text.substring(start, end);
            int[] ids = gpt2.encode(slice);
            // a few characters (a line break and a capital, say) can take a token each; any real stretch of text compresses
            assertTrue(ids.length < slice.length() || slice.length() < 50, "BPE should compress, seed " + seed);
            assertEquals(slice, gpt2.decode(ids), "seed " + seed);
        }
    }

    @Test
    void byteTokenizerRoundTripsRandomUnicode() {
        Tokenizer bytes = Tokenizers.byName("BYTE");
        assertEquals(257, bytes.vocabSize());
        assertEquals(256, bytes.endOfText());
        for (int i = 0; i < 200; i++) {
            String s = randomUnicode(random.nextInt(100));
            int[] ids = bytes.encode(s);
            assertEquals(s.getBytes(StandardCharsets.UTF_8).length, ids.length);
            assertTrue(IntStream.of(ids).allMatch(id -> id >= 0 && id < 256));
            assertEquals(s, bytes.decode(ids), "seed " + seed);
        }
        assertEquals("x<|endoftext|>", bytes.decode(new int[]{'x', 256}));
    }

    @Test
    void streamDecoderKeepsCharactersWhole() {
        String text = "héllo 🙂 世界 " + randomUnicode(40);
        for (Tokenizer t : List.of(ByteTokenizer.instance(), BpeTokenizer.gpt2())) {
            StreamDecoder stream = new StreamDecoder(t);
            StringBuilder out = new StringBuilder();
            for (int id : t.encode(text)) {
                String piece = stream.next(id);
                assertFalse(piece.contains("\uFFFD"), t.name() + " printed half a character, seed " + seed);
                out.append(piece);
            }
            out.append(stream.flush());
            assertEquals(text, out.toString(), t.name() + ", seed " + seed);
        }
        // A single byte of a multi-byte character on its own decodes to a replacement, not an exception.
        assertEquals("\uFFFD", ByteTokenizer.instance().decode(0xE4));
    }

    @Test
    void idsOutsideTheVocabularyDecodeToReplacement() {
        assertEquals("Hello\uFFFD world", BpeTokenizer.gpt2().decode(new int[]{15496, 50300, 995}));
        assertEquals("a\uFFFD", ByteTokenizer.instance().decode(new int[]{'a', -1}));
    }

    @Test
    void unknownTokenizerNameIsAClearError() {
        FrugalException e = assertThrows(FrugalException.class, () -> Tokenizers.byName("sentencepiece"));
        assertTrue(e.getMessage().contains("'sentencepiece'") && e.getMessage().contains("gpt2") && e.getMessage().contains("byte"),
                e.getMessage());
        assertThrows(FrugalException.class, () -> Tokenizers.byName(null));
        assertSame(BpeTokenizer.gpt2(), Tokenizers.byName(" GPT2 "));
    }

    @Test
    void cuttingLongDocumentsDoesNotChangeTheirTokens() throws IOException {
        assumeTrue(Files.exists(SHAKESPEARE), "needs " + SHAKESPEARE);
        String text = Files.readString(SHAKESPEARE).substring(0, 150_000);
        List<String> pieces = CorpusEncoder.pieces(text, 3_000);
        assertTrue(pieces.size() > 20, "expected many cuts, got " + pieces.size());
        assertEquals(text, String.join("", pieces));
        Tokenizer gpt2 = BpeTokenizer.gpt2();
        int[] whole = gpt2.encode(text);
        int[] cut = pieces.stream().map(gpt2::encode).flatMapToInt(IntStream::of).toArray();
        assertArrayEquals(whole, cut);
    }

    /** Random code points from every plane, excluding surrogates (they cannot be encoded alone). */
    private String randomUnicode(int length) {
        StringBuilder sb = new StringBuilder();
        while (sb.codePointCount(0, sb.length()) < length) {
            int cp = switch (random.nextInt(4)) {
                case 0 -> 0x20 + random.nextInt(0x5F);
                case 1 -> 0x80 + random.nextInt(0x780);
                case 2 -> 0x800 + random.nextInt(0xD800 - 0x800);
                default -> 0x10000 + random.nextInt(0x10FFFF - 0x10000);
            };
            sb.appendCodePoint(cp);
        }
        return sb.toString();
    }
}
