package frugal.backend.cuda;

import frugal.FrugalException;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;

/**
 * Finds the CUDA shared libraries at run time (never bundled) and makes downcall handles into them.
 *
 * <p>Search order for each soname: the folders in {@code FRUGAL_CUDA_LIB_PATH} (colon-separated), then
 * {@code $CUDA_HOME/lib64} and {@code $CUDA_HOME/targets/x86_64-linux/lib}, then the standard places
 * (/usr/lib, /usr/lib/x86_64-linux-gnu, /usr/local/cuda*&#47;targets/x86_64-linux/lib, /usr/local/cuda/lib64), and
 * last the bare soname through the dynamic loader (LD_LIBRARY_PATH, ldconfig cache).
 */
final class NativeLibs {
    static final Linker LINKER = Linker.nativeLinker();

    private NativeLibs() {
    }

    /** A loaded library: its path (or soname) and a lookup into it. */
    record Lib(String where, SymbolLookup lookup) {
        MethodHandle fn(String symbol, FunctionDescriptor descriptor) {
            MemorySegment address = lookup.find(symbol).orElseThrow(() -> new FrugalException(
                    "symbol " + symbol + " not found in " + where + " (too old a CUDA library?)"));
            return LINKER.downcallHandle(address, descriptor);
        }

        boolean has(String symbol) {
            return lookup.find(symbol).isPresent();
        }
    }

    static List<Path> searchFolders() {
        Set<Path> dirs = new LinkedHashSet<>();
        String custom = System.getenv("FRUGAL_CUDA_LIB_PATH");
        if (custom != null) {
            for (String d : custom.split(":")) if (!d.isBlank()) dirs.add(Path.of(d));
        }
        String cudaHome = System.getenv("CUDA_HOME");
        if (cudaHome != null && !cudaHome.isBlank()) {
            dirs.add(Path.of(cudaHome, "lib64"));
            dirs.add(Path.of(cudaHome, "targets", "x86_64-linux", "lib"));
        }
        dirs.add(Path.of("/usr/lib"));
        dirs.add(Path.of("/usr/lib/x86_64-linux-gnu"));
        dirs.add(Path.of("/usr/lib64"));
        dirs.add(Path.of("/usr/local/cuda/targets/x86_64-linux/lib"));
        dirs.add(Path.of("/usr/local/cuda/lib64"));
        try (var stream = Files.list(Path.of("/usr/local"))) {
            stream.filter(p -> p.getFileName().toString().startsWith("cuda-")).sorted((a, b) -> b.compareTo(a))
                    .forEach(p -> {
                        dirs.add(p.resolve("targets/x86_64-linux/lib"));
                        dirs.add(p.resolve("lib64"));
                    });
        } catch (Exception ignored) {
            // no /usr/local/cuda-* folders
        }
        return new ArrayList<>(dirs);
    }

    /** Loads the first of {@code sonames} found; throws a FrugalException naming every place tried. */
    static Lib load(String what, String... sonames) {
        List<String> tried = new ArrayList<>();
        for (String soname : sonames) {
            for (Path dir : searchFolders()) {
                Path p = dir.resolve(soname);
                if (Files.exists(p)) {
                    try {
                        return new Lib(p.toString(), SymbolLookup.libraryLookup(p, Arena.global()));
                    } catch (IllegalArgumentException e) {
                        tried.add(p + " (" + e.getMessage() + ")");
                    }
                }
            }
        }
        for (String soname : sonames) {
            try {
                return new Lib(soname, SymbolLookup.libraryLookup(soname, Arena.global()));
            } catch (IllegalArgumentException e) {
                tried.add(soname + " via the dynamic loader");
            }
        }
        throw new FrugalException("cannot load " + what + " (" + String.join(", ", sonames) + "); set FRUGAL_CUDA_LIB_PATH"
                + " or CUDA_HOME to the folder that holds it. Tried: " + String.join("; ", tried)
                + " and the folders " + searchFolders());
    }
}
