package frugal.backend.cuda;

import frugal.FrugalException;
import frugal.tensor.Tensor;

import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The .cu kernel sources (resources beside this class), compiled by NVRTC on first use for the device's
 * architecture, cached on disk as CUBIN under {@code ~/.cache/frugal/cubin/<sha256>.cubin} (key: source, arch,
 * driver and NVRTC versions; {@code FRUGAL_CACHE_DIR} overrides the folder), and loaded with cuModuleLoadData.
 * Also launches them: arguments are Tensors (device pointers), Integer, Long and Float values.
 */
final class Kernels implements AutoCloseable {
    private static final int MAX_ARGS = 32;
    private static final Pattern INCLUDE = Pattern.compile("\\s*#include\\s+\"([\\w.]+)\"\\s*");
    /** FRUGAL_CUDA_SYNC=1: wait after every launch, so that an asynchronous fault names its kernel (debugging). */
    static final boolean SYNC_EACH_LAUNCH = "1".equals(System.getenv("FRUGAL_CUDA_SYNC"));

    private final CudaDriver cu;
    private final int arch;
    private final int maxSharedOptin;
    private final MemorySegment stream;
    private final Map<String, MemorySegment> modules = new HashMap<>();
    private final Map<String, MemorySegment> functions = new HashMap<>();
    private final Map<String, Integer> sharedLimits = new HashMap<>();
    private final Arena arena = Arena.ofShared();
    /** Argument values (8 bytes each) and the pointer array cuLaunchKernel reads; reused, since the launch copies them. */
    private final MemorySegment argValues, argPointers;

    Kernels(CudaDriver cu, int arch, int maxSharedOptin, MemorySegment stream) {
        this.cu = cu;
        this.arch = arch;
        this.maxSharedOptin = maxSharedOptin;
        this.stream = stream;
        argValues = arena.allocate(8L * MAX_ARGS, 8);
        argPointers = arena.allocate(ValueLayout.ADDRESS, MAX_ARGS);
        for (int i = 0; i < MAX_ARGS; i++) argPointers.setAtIndex(ValueLayout.ADDRESS, i, argValues.asSlice(8L * i, 8));
    }

    static Path cacheFolder() {
        String custom = System.getenv("FRUGAL_CACHE_DIR");
        if (custom != null && !custom.isBlank()) return Path.of(custom, "cubin");
        String xdg = System.getenv("XDG_CACHE_HOME");
        Path base = xdg != null && !xdg.isBlank() ? Path.of(xdg) : Path.of(System.getProperty("user.home"), ".cache");
        return base.resolve("frugal").resolve("cubin");
    }

    static String source(String file) {
        String resource = "/frugal/backend/cuda/" + file;
        try (InputStream in = Kernels.class.getResourceAsStream(resource)) {
            if (in == null) throw new FrugalException("kernel source " + resource + " is missing from the class path");
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new FrugalException("cannot read kernel source " + resource + ": " + e.getMessage(), e);
        }
    }

    /** file's source with each {@code #include "name"} line replaced by that resource's source (NVRTC has no file system here). */
    static String withIncludes(String file) {
        StringBuilder out = new StringBuilder("#line 1 \"" + file + "\"\n");
        String[] lines = source(file).split("\n", -1);
        for (int i = 0; i < lines.length; i++) {
            Matcher m = INCLUDE.matcher(lines[i]);
            if (m.matches()) {
                out.append(withIncludes(m.group(1))).append("\n#line ").append(i + 2).append(" \"").append(file).append("\"\n");
            } else {
                out.append(lines[i]).append('\n');
            }
        }
        return out.toString();
    }

    /**
     * The architecture compiled for: on Hopper (9.0) its feature set sm_90a, whose warpgroup MMA (wgmma) the flash
     * forward uses; elsewhere the device's own.
     */
    private String target() {
        return arch == 90 ? "90a" : String.valueOf(arch);
    }

    /** The CUBIN of {@code file} for this device, from the disk cache or freshly compiled. */
    byte[] cubin(String file) {
        String src = source("common.cuh") + "\n" + withIncludes(file);
        Nvrtc nvrtc = Nvrtc.get();
        String nvrtcVersion = nvrtc.version();
        String key;
        try {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            sha.update(src.getBytes(StandardCharsets.UTF_8));
            sha.update(("\0sm_" + target() + "\0driver " + cu.driverVersion() + "\0nvrtc " + nvrtcVersion).getBytes(StandardCharsets.UTF_8));
            key = HexFormat.of().formatHex(sha.digest());
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
        Path cached = cacheFolder().resolve(key + ".cubin");
        if (Files.isRegularFile(cached)) {
            try {
                return Files.readAllBytes(cached);
            } catch (IOException ignored) {
                // recompile below
            }
        }
        byte[] bin = nvrtc.compileToCubin(file, src, target(), List.of());
        try {
            Files.createDirectories(cached.getParent());
            Path tmp = Files.createTempFile(cached.getParent(), key, ".tmp");
            Files.write(tmp, bin);
            Files.move(tmp, cached, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException | UnsupportedOperationException e) {
            System.err.println("frugal: cannot cache compiled kernels in " + cached.getParent() + ": " + e.getMessage());
        }
        return bin;
    }

    private MemorySegment module(String file) {
        MemorySegment m = modules.get(file);
        if (m == null) {
            byte[] bin = cubin(file);
            try (Arena tmp = Arena.ofConfined()) {
                MemorySegment image = tmp.allocate(bin.length + 1L, 16);
                MemorySegment.copy(bin, 0, image, ValueLayout.JAVA_BYTE, 0, bin.length);
                m = cu.moduleLoadData(image);
            }
            modules.put(file, m);
        }
        return m;
    }

    /** The kernel {@code name} (extern "C") of {@code file}. */
    MemorySegment function(String file, String name) {
        String key = file + ":" + name;
        MemorySegment f = functions.get(key);
        if (f == null) {
            f = cu.moduleFunction(module(file), name);
            functions.put(key, f);
        }
        return f;
    }

    int maxSharedOptin() {
        return maxSharedOptin;
    }

    /**
     * Launches {@code file:name} on the backend's stream. Arguments: a Tensor (its device address), Integer, Long, Float,
     * null (a null pointer), or a MemorySegment holding a struct passed by value (the launch copies it).
     */
    void launch(String file, String name, int gx, int gy, int gz, int bx, int by, int bz, int sharedBytes, Object... args) {
        if (args.length > MAX_ARGS) throw new IllegalArgumentException("too many kernel arguments: " + args.length);
        MemorySegment f = function(file, name);
        if (sharedBytes > 48 * 1024) {
            if (sharedBytes > maxSharedOptin) {
                throw new FrugalException("kernel " + name + " needs " + sharedBytes + " bytes of shared memory; the device allows "
                        + maxSharedOptin);
            }
            String key = file + ":" + name;
            Integer set = sharedLimits.get(key);
            if (set == null || set < sharedBytes) {
                cu.functionAttribute(f, CudaDriver.FUNC_ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES, sharedBytes);
                sharedLimits.put(key, sharedBytes);
            }
        }
        for (int i = 0; i < args.length; i++) {
            long off = 8L * i;
            argPointers.setAtIndex(ValueLayout.ADDRESS, i, argValues.asSlice(off, 8));
            switch (args[i]) {
                case MemorySegment byValue -> argPointers.setAtIndex(ValueLayout.ADDRESS, i, byValue); // a struct (a tensor map)
                case Tensor t -> argValues.set(ValueLayout.JAVA_LONG, off, t.data().address());
                case Integer v -> argValues.set(ValueLayout.JAVA_INT, off, v);
                case Long v -> argValues.set(ValueLayout.JAVA_LONG, off, v);
                case Float v -> argValues.set(ValueLayout.JAVA_FLOAT, off, v);
                case null -> argValues.set(ValueLayout.JAVA_LONG, off, 0L);
                default -> throw new IllegalArgumentException("unsupported kernel argument " + args[i].getClass());
            }
        }
        if (gx <= 0 || gy <= 0 || gz <= 0) return; // nothing to do
        cu.launch(name, f, gx, gy, gz, bx, by, bz, sharedBytes, stream, argPointers);
        if (SYNC_EACH_LAUNCH) {
            try {
                cu.streamSynchronize(stream);
            } catch (FrugalException e) {
                throw new FrugalException("kernel " + file + ":" + name + " failed: " + e.getMessage(), e);
            }
        }
    }

    @Override
    public void close() {
        for (MemorySegment m : modules.values()) cu.moduleUnload(m);
        modules.clear();
        functions.clear();
        arena.close();
    }
}
