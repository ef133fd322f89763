package frugal.backend.cuda;

import frugal.FrugalException;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;
import java.util.List;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/** NVRTC (libnvrtc.so.13 or .12): compiles CUDA C source to a CUBIN for one GPU architecture at run time. */
final class Nvrtc {
    private static volatile Nvrtc instance;

    final NativeLibs.Lib lib;
    private final MethodHandle nvrtcVersion, nvrtcCreateProgram, nvrtcDestroyProgram, nvrtcCompileProgram,
            nvrtcGetProgramLogSize, nvrtcGetProgramLog, nvrtcGetCUBINSize, nvrtcGetCUBIN, nvrtcGetErrorString;

    private Nvrtc(NativeLibs.Lib lib) {
        this.lib = lib;
        nvrtcVersion = lib.fn("nvrtcVersion", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        nvrtcCreateProgram = lib.fn("nvrtcCreateProgram",
                FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS, JAVA_INT, ADDRESS, ADDRESS));
        nvrtcDestroyProgram = lib.fn("nvrtcDestroyProgram", FunctionDescriptor.of(JAVA_INT, ADDRESS));
        nvrtcCompileProgram = lib.fn("nvrtcCompileProgram", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, ADDRESS));
        nvrtcGetProgramLogSize = lib.fn("nvrtcGetProgramLogSize", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        nvrtcGetProgramLog = lib.fn("nvrtcGetProgramLog", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        nvrtcGetCUBINSize = lib.fn("nvrtcGetCUBINSize", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        nvrtcGetCUBIN = lib.fn("nvrtcGetCUBIN", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        nvrtcGetErrorString = lib.fn("nvrtcGetErrorString", FunctionDescriptor.of(ADDRESS, JAVA_INT));
    }

    static Nvrtc get() {
        Nvrtc n = instance;
        if (n == null) {
            synchronized (Nvrtc.class) {
                n = instance;
                if (n == null) {
                    n = new Nvrtc(NativeLibs.load("NVRTC", "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"));
                    instance = n;
                }
            }
        }
        return n;
    }

    private String errorText(int code) {
        try {
            MemorySegment s = (MemorySegment) nvrtcGetErrorString.invokeExact(code);
            return s.equals(MemorySegment.NULL) ? "nvrtcResult " + code : s.reinterpret(1024).getString(0);
        } catch (Throwable t) {
            return "nvrtcResult " + code;
        }
    }

    private void check(String call, int result, String log) {
        if (result != 0) {
            throw new FrugalException(call + " failed: " + errorText(result) + (log == null || log.isBlank() ? "" : "\n" + log));
        }
    }

    private static int invokeInt(MethodHandle h, Object... args) {
        try {
            return (int) h.invokeWithArguments(args);
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new FrugalException("native call failed: " + t, t);
        }
    }

    /** "major.minor" of the loaded NVRTC. */
    String version() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment major = arena.allocate(JAVA_INT), minor = arena.allocate(JAVA_INT);
            check("nvrtcVersion", invokeInt(nvrtcVersion, major, minor), null);
            return major.get(JAVA_INT, 0) + "." + minor.get(JAVA_INT, 0);
        }
    }

    /**
     * Compiles {@code source} (named {@code name} in messages) for {@code sm_<arch>} and returns the CUBIN bytes.
     * A compile error throws with NVRTC's log.
     */
    byte[] compileToCubin(String name, String source, String arch, List<String> extraOptions) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment progPtr = arena.allocate(ADDRESS);
            check("nvrtcCreateProgram(" + name + ")", invokeInt(nvrtcCreateProgram, progPtr, arena.allocateFrom(source),
                    arena.allocateFrom(name), 0, MemorySegment.NULL, MemorySegment.NULL), null);
            MemorySegment prog = progPtr.get(ADDRESS, 0);
            try {
                List<String> options = new java.util.ArrayList<>(List.of("--gpu-architecture=sm_" + arch, "-std=c++17"));
                options.addAll(extraOptions);
                MemorySegment opts = arena.allocate(ADDRESS, options.size());
                for (int i = 0; i < options.size(); i++) opts.setAtIndex(ADDRESS, i, arena.allocateFrom(options.get(i)));
                int r = invokeInt(nvrtcCompileProgram, prog, options.size(), opts);
                String log = log(arena, prog);
                check("nvrtcCompileProgram(" + name + ", " + options + ")", r, log);
                MemorySegment size = arena.allocate(JAVA_LONG);
                check("nvrtcGetCUBINSize(" + name + ")", invokeInt(nvrtcGetCUBINSize, prog, size), null);
                MemorySegment cubin = arena.allocate(size.get(JAVA_LONG, 0));
                check("nvrtcGetCUBIN(" + name + ")", invokeInt(nvrtcGetCUBIN, prog, cubin), null);
                return cubin.toArray(java.lang.foreign.ValueLayout.JAVA_BYTE);
            } finally {
                invokeInt(nvrtcDestroyProgram, progPtr);
            }
        }
    }

    private String log(Arena arena, MemorySegment prog) {
        MemorySegment size = arena.allocate(JAVA_LONG);
        if (invokeInt(nvrtcGetProgramLogSize, prog, size) != 0) return "";
        long n = size.get(JAVA_LONG, 0);
        if (n <= 1) return "";
        MemorySegment text = arena.allocate(n);
        if (invokeInt(nvrtcGetProgramLog, prog, text) != 0) return "";
        return text.getString(0);
    }
}
