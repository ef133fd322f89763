package frugal.data;

import frugal.FrugalException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.ZipEntry;
import java.util.zip.ZipOutputStream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class CorpusTest {
    private static final byte[] BINARY = {'P', 'K', 0, 1, 2, 3};

    @TempDir
    Path dir;

    @Test
    void folderIsReadRecursivelyInPathOrderSkippingBinaryAndHidden() throws IOException {
        write("b/z.txt", "bz");
        write("a.txt", "a");
        write("b/a.txt", "ba");
        write("c.txt", "c");
        write(".git/config", "hidden");
        write(".hidden.txt", "hidden");
        write("blank.txt", " \n ");
        Files.write(dir.resolve("b/image.png"), BINARY);
        Files.write(dir.resolve("latin1.txt"), new byte[]{'c', 'a', 'f', (byte) 0xE9}); // not UTF-8

        List<String> docs = new ArrayList<>();
        Corpus.Stats stats = Corpus.open(dir, 0).read(docs::add);
        assertEquals(List.of("a", "ba", "bz", "c"), docs);
        assertEquals(4, stats.documents());
        assertEquals(2, stats.skipped());
    }

    @Test
    void zipEntriesAreReadSortedByName() throws IOException {
        Path zip = dir.resolve("corpus.zip");
        try (ZipOutputStream out = new ZipOutputStream(Files.newOutputStream(zip))) {
            for (String[] e : new String[][]{{"m/2.java", "two"}, {"m/1.java", "one"}, {"bin.class", null}, {"a.txt", "first"}}) {
                out.putNextEntry(new ZipEntry(e[0]));
                out.write(e[1] == null ? BINARY : e[1].getBytes(StandardCharsets.UTF_8));
                out.closeEntry();
            }
        }
        List<String> docs = new ArrayList<>();
        Corpus.Stats stats = Corpus.open(zip, 0).read(docs::add);
        assertEquals(List.of("first", "one", "two"), docs);
        assertEquals(1, stats.skipped());
    }

    @Test
    void byteCapStopsReadingAndCutsOnACharacterBoundary() throws IOException {
        write("1.txt", "aaaa");
        write("2.txt", "bé bé"); // é is two bytes
        write("3.txt", "never read");
        List<String> docs = new ArrayList<>();
        Corpus.Stats stats = Corpus.open(dir, 6).read(docs::add);
        assertEquals(List.of("aaaa", "b"), docs); // "aaaa" + "b" + half of é would be 6 bytes: the half is dropped
        assertEquals(5, stats.bytes());
        assertArrayEquals(new int[]{256, 'a', 'a', 'a', 'a', 256, 'b'}, CorpusEncoder.encodeAll(Corpus.open(dir, 6), ByteTokenizer.instance()));
        docs.clear();
        Corpus.open(dir, 7).read(docs::add);
        assertEquals(List.of("aaaa", "bé"), docs);
    }

    @Test
    void documentsArePrecededByEndOfText() throws IOException {
        write("x/1.txt", "Hello world");
        write("x/2.txt", "Hello");
        assertArrayEquals(new int[]{50256, 15496, 995, 50256, 15496},
                CorpusEncoder.encodeAll(Corpus.open(dir.resolve("x"), 0), BpeTokenizer.gpt2()));
    }

    @Test
    void emptyCorporaAreErrorsNamingThePath() throws IOException {
        Files.createDirectories(dir.resolve("empty"));
        write("binary-only/blank.txt", "   ");
        Files.write(dir.resolve("binary-only/x.bin"), BINARY);
        write("empty.txt", "");
        for (String name : List.of("empty", "binary-only", "empty.txt")) {
            Path p = dir.resolve(name);
            FrugalException e = assertThrows(FrugalException.class, () -> Corpus.open(p, 0).read(d -> { }));
            assertTrue(e.getMessage().startsWith(p.toString()) && e.getMessage().contains("corpus is empty"), e.getMessage());
        }
    }

    @Test
    void missingOrBinaryInputsAreErrorsNamingThePath() throws IOException {
        Path missing = dir.resolve("nope.txt");
        FrugalException e = assertThrows(FrugalException.class, () -> Corpus.open(missing, 0));
        assertTrue(e.getMessage().contains(missing.toString()), e.getMessage());

        Path binary = Files.write(dir.resolve("data.bin"), BINARY);
        e = assertThrows(FrugalException.class, () -> Corpus.open(binary, 0).read(d -> { }));
        assertTrue(e.getMessage().contains(binary.toString()) && e.getMessage().contains("not a text file"), e.getMessage());

        Path badZip = write("broken.zip", "this is not a zip");
        e = assertThrows(FrugalException.class, () -> Corpus.open(badZip, 0).read(d -> { }));
        assertTrue(e.getMessage().contains(badZip.toString()) && e.getMessage().contains("zip"), e.getMessage());

        assertThrows(FrugalException.class, () -> Corpus.open(dir, -1));
    }

    @Test
    void defaultCorpusIsTheJdksSourceZip() {
        Path src = Path.of(System.getProperty("java.home"), "lib", "src.zip");
        if (Files.isRegularFile(src)) {
            assertEquals(src, Corpus.open(null, 1000).path());
            List<String> docs = new ArrayList<>();
            Corpus.open(null, 1000).read(docs::add);
            assertEquals(1000, docs.stream().mapToInt(d -> d.getBytes(StandardCharsets.UTF_8).length).sum(), "a cap smaller than one file");
        } else {
            FrugalException e = assertThrows(FrugalException.class, () -> Corpus.open(null, 0));
            assertTrue(e.getMessage().contains("src.zip"), e.getMessage());
        }
    }

    @Test
    void fingerprintChangesWhenAFileChanges() throws IOException {
        write("f/a.txt", "one");
        Corpus corpus = Corpus.open(dir.resolve("f"), 0);
        String before = corpus.fingerprint();
        assertEquals(before, corpus.fingerprint());
        write("f/a.txt", "one more");
        assertNotEquals(before, corpus.fingerprint());
        assertNotEquals(corpus.fingerprint(), Corpus.open(dir.resolve("f"), 5).fingerprint(), "the cap is part of it");
    }

    private Path write(String name, String text) throws IOException {
        Path p = dir.resolve(name);
        Files.createDirectories(p.getParent());
        return Files.writeString(p, text);
    }
}
