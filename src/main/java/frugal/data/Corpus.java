package frugal.data;

import frugal.FrugalException;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemLoopException;
import java.nio.file.FileVisitOption;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.EnumSet;
import java.util.List;
import java.util.Locale;
import java.util.function.Consumer;
import java.util.zip.ZipEntry;
import java.util.zip.ZipException;
import java.util.zip.ZipFile;

/**
 * A source of text documents: one text file, a folder (recursively; hidden entries skipped) or a .zip.
 * Files and entries are read in order of their path so the token stream is the same on every machine;
 * binary ones (a NUL byte, or not UTF-8) are skipped. {@code maxBytes} caps the text read: reading stops
 * there, cutting the last document at a character boundary.
 */
public final class Corpus {
    private enum Kind { FILE, FOLDER, ZIP }

    /** Largest document read whole: a Java array (and a String) holds fewer than 2^31 elements. */
    private static final int MAX_DOCUMENT = Integer.MAX_VALUE - 16;

    /** What a read produced: documents passed on, binary files skipped, UTF-8 bytes of text. */
    public record Stats(int documents, int skipped, long bytes) {
    }

    private final Path path;
    private final Kind kind;
    private final long maxBytes;

    private Corpus(Path path, Kind kind, long maxBytes) {
        this.path = path;
        this.kind = kind;
        this.maxBytes = maxBytes;
    }

    /** {@code path} null means the running JDK's own sources; {@code maxBytes} 0 means no cap. */
    public static Corpus open(Path path, long maxBytes) {
        if (maxBytes < 0) throw new FrugalException("the byte cap must be 0 (all) or positive, got " + maxBytes);
        if (path == null) path = jdkSources();
        if (!Files.exists(path)) throw new FrugalException(path + ": no such file or folder");
        if (!Files.isReadable(path)) throw new FrugalException(path + ": not readable (permission denied)");
        Kind kind = Files.isDirectory(path) ? Kind.FOLDER
                : path.getFileName().toString().toLowerCase(Locale.ROOT).endsWith(".zip") ? Kind.ZIP : Kind.FILE;
        return new Corpus(path, kind, maxBytes);
    }

    /** The JDK's lib/src.zip: tens of MB of Java that every JDK install can offer as a default corpus. */
    public static Path jdkSources() {
        Path src = Path.of(System.getProperty("java.home"), "lib", "src.zip");
        if (!Files.isRegularFile(src)) {
            throw new FrugalException(src + ": this JDK has no lib/src.zip to train on by default "
                    + "(install its source package, e.g. openjdk-25-source, or pass --data FILE|FOLDER|ZIP)");
        }
        return src;
    }

    public Path path() {
        return path;
    }

    public long maxBytes() {
        return maxBytes;
    }

    public String describe() {
        return path + (maxBytes > 0 ? String.format(" (first %,d bytes)", maxBytes) : "");
    }

    /**
     * Identifies the content without reading it: the path, size and modification time of every file that
     * could contribute, plus the cap. Used as the token cache key.
     */
    public String fingerprint() {
        StringBuilder sb = new StringBuilder(kind + " " + path.toAbsolutePath().normalize() + " max=" + maxBytes + "\n");
        try {
            List<Path> files = kind == Kind.FOLDER ? folderFiles() : List.of(path);
            for (Path f : files) {
                BasicFileAttributes a = Files.readAttributes(f, BasicFileAttributes.class);
                sb.append(path.relativize(f)).append(' ').append(a.size()).append(' ')
                        .append(a.lastModifiedTime().toMillis()).append('\n');
            }
        } catch (IOException e) {
            throw new FrugalException(path + ": cannot read (" + why(e) + ")", e);
        }
        return sb.toString();
    }

    /** Calls {@code documents} with each non-blank text document, in order. Throws if there is none. */
    public Stats read(Consumer<String> documents) {
        Reader reader = new Reader(documents);
        try {
            switch (kind) {
                case FILE -> reader.file(path, true);
                case FOLDER -> {
                    for (Path f : folderFiles()) if (!reader.file(f, false)) break;
                }
                case ZIP -> readZip(reader);
            }
        } catch (IOException e) {
            throw new FrugalException(path + ": cannot read (" + why(e) + ")", e);
        }
        if (reader.documents == 0) {
            throw new FrugalException(path + ": corpus is empty"
                    + (reader.skipped > 0 ? " (" + reader.skipped + " binary or non-UTF-8 files skipped)" : ""));
        }
        return new Stats(reader.documents, reader.skipped, reader.bytes);
    }

    private void readZip(Reader reader) throws IOException {
        try (ZipFile zip = new ZipFile(path.toFile())) {
            List<? extends ZipEntry> entries = zip.stream().filter(e -> !e.isDirectory())
                    .sorted(Comparator.comparing(ZipEntry::getName)).toList();
            for (ZipEntry e : entries) {
                byte[] bytes;
                try (InputStream in = zip.getInputStream(e)) {
                    bytes = reader.readUpToLimit(in, path + "!" + e.getName(), e.getSize());
                }
                if (!reader.accept(bytes)) break;
            }
        } catch (ZipException e) {
            throw new FrugalException(path + ": not a readable zip file (" + e.getMessage() + ")", e);
        }
    }

    /** Regular files under the folder, sorted by relative path with '/' separators; hidden ones left out. */
    private List<Path> folderFiles() throws IOException {
        List<Path> files = new ArrayList<>();
        // Links are followed (a folder of symlinked texts is common); walkFileTree reports cycles, which are skipped.
        Files.walkFileTree(path, EnumSet.of(FileVisitOption.FOLLOW_LINKS), Integer.MAX_VALUE, new SimpleFileVisitor<>() {
            @Override
            public FileVisitResult preVisitDirectory(Path dir, BasicFileAttributes attrs) {
                // .git and the like hold binary or duplicate content.
                return !dir.equals(path) && hidden(dir) ? FileVisitResult.SKIP_SUBTREE : FileVisitResult.CONTINUE;
            }

            @Override
            public FileVisitResult visitFile(Path file, BasicFileAttributes attrs) {
                if (attrs.isRegularFile() && !hidden(file)) files.add(file);
                return FileVisitResult.CONTINUE;
            }

            @Override
            public FileVisitResult visitFileFailed(Path file, IOException e) {
                if (e instanceof FileSystemLoopException) return FileVisitResult.CONTINUE;
                throw new FrugalException(file + ": cannot read (" + why(e) + ")", e);
            }
        });
        files.sort(Comparator.comparing(f -> path.relativize(f).toString().replace('\\', '/')));
        return files;
    }

    static String why(IOException e) {
        if (e instanceof NoSuchFileException) return "no such file";
        if (e instanceof AccessDeniedException) return "permission denied";
        return e.getMessage() != null ? e.getMessage() : e.getClass().getSimpleName();
    }

    private static boolean hidden(Path p) {
        return p.getFileName() != null && p.getFileName().toString().startsWith(".");
    }

    /** Applies the byte cap and the text test, and counts. */
    private final class Reader {
        private final Consumer<String> sink;
        int documents, skipped;
        long bytes;

        Reader(Consumer<String> sink) {
            this.sink = sink;
        }

        /** Returns false once the cap is reached. A lone file that is not text is an error, not a skip. */
        boolean file(Path f, boolean only) {
            byte[] content;
            try (InputStream in = Files.newInputStream(f)) {
                content = readUpToLimit(in, f.toString(), Files.size(f));
            } catch (IOException e) {
                throw new FrugalException(f + ": cannot read (" + why(e) + ")", e);
            }
            int skippedBefore = skipped;
            boolean more = accept(content);
            if (only && skipped > skippedBefore) {
                throw new FrugalException(f + ": not a text file (it contains NUL bytes or is not valid UTF-8)");
            }
            return more;
        }

        /**
         * Reads no more than the cap can still use (plus a few bytes to find a character boundary), so a
         * small cap on a huge file stays cheap.
         */
        byte[] readUpToLimit(InputStream in, String name, long size) throws IOException {
            if (maxBytes == 0 && size > MAX_DOCUMENT) {
                throw new FrugalException(String.format("%s: %,d bytes is too large for one document (at most %,d); "
                        + "split it or set a byte cap", name, size, MAX_DOCUMENT));
            }
            int limit = maxBytes == 0 ? MAX_DOCUMENT : (int) Math.min(MAX_DOCUMENT, maxBytes - bytes + 4);
            return in.readNBytes(limit);
        }

        /** Passes on the text in {@code content}, cut at the cap; returns false once the cap is reached. */
        boolean accept(byte[] content) {
            int length = content.length;
            boolean capped = maxBytes > 0 && bytes + length >= maxBytes;
            if (maxBytes > 0 && bytes + length > maxBytes) {
                length = (int) (maxBytes - bytes);
                while (length > 0 && (content[length] & 0xC0) == 0x80) length--; // not inside a character
            }
            String text = text(content, length);
            if (text == null) {
                skipped++; // binary content does not count against the cap
                return true;
            }
            bytes += length;
            if (!text.isBlank()) {
                documents++;
                sink.accept(text.startsWith("\uFEFF") ? text.substring(1) : text);
            }
            return !capped;
        }
    }

    /** The first {@code length} bytes as text, or null when they look binary: a NUL byte, or not valid UTF-8. */
    static String text(byte[] content, int length) {
        for (int i = 0; i < length; i++) if (content[i] == 0) return null;
        try {
            return StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(content, 0, length)).toString();
        } catch (CharacterCodingException e) {
            return null;
        }
    }
}
