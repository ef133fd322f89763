package frugal.io;

import frugal.FrugalException;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.concurrent.ThreadLocalRandom;

/**
 * Replaces a file all at once: readers (and a crash) see either the old content or the complete new
 * content, never a half-written file. The content goes to a temporary file in the target's directory
 * (so the final rename stays within one file system), is fsynced, and is renamed over the target.
 */
public final class AtomicFile {
    /** Writes the whole content to a channel positioned at 0. */
    @FunctionalInterface
    public interface Body {
        void writeTo(FileChannel out) throws IOException;
    }

    private AtomicFile() {
    }

    /**
     * Writes {@code target} through {@code body}. If the body or any IO step fails, an existing target is left
     * untouched and the temporary file is deleted; IO failures become a {@link FrugalException} naming the
     * target, anything the body throws otherwise propagates unchanged.
     */
    public static void write(Path target, Body body) {
        Path dir = target.toAbsolutePath().getParent();
        Path tmp = dir.resolve("." + target.getFileName() + "." + Long.toHexString(ThreadLocalRandom.current().nextLong()) + ".tmp");
        boolean moved = false;
        try {
            // CREATE_NEW (not createTempFile) so the file gets the usual umask permissions, not 0600.
            try (FileChannel out = FileChannel.open(tmp, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
                body.writeTo(out);
                out.force(true);
            }
            // rename(2) replaces an existing target atomically on POSIX file systems.
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE);
            moved = true;
            syncDirectory(dir);
        } catch (IOException e) {
            throw new FrugalException(target + ": cannot write file: " + describe(e), e);
        } finally {
            if (!moved) deleteQuietly(tmp);
        }
    }

    /** Makes the rename itself durable; not every platform can open a directory, so this is best effort. */
    private static void syncDirectory(Path dir) {
        try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
            d.force(true);
        } catch (IOException | UnsupportedOperationException ignored) {
            // The file content is already durable; only the directory entry may lag behind a crash.
        }
    }

    private static void deleteQuietly(Path tmp) {
        try {
            Files.deleteIfExists(tmp);
        } catch (IOException ignored) {
            // Nothing more to do; the original failure is what the caller needs to see.
        }
    }

    /** An IO failure for a message: its type and, when it has one, its text. */
    public static String describe(IOException e) {
        String m = e.getMessage();
        return e.getClass().getSimpleName() + (m == null ? "" : " (" + m + ")");
    }
}
