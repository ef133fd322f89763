package frugal.backend.cuda;

import frugal.FrugalException;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The CUDA driver API (libcuda.so.1) through java.lang.foreign. Every call's result is checked: a failure throws
 * a FrugalException naming the call and the driver's error name and string. Handles (contexts, streams,
 * modules, functions) are MemorySegments holding the pointer; device pointers are longs.
 */
final class CudaDriver {
    // cuda.h: CUdevice_attribute
    static final int ATTR_MULTIPROCESSOR_COUNT = 16;
    static final int ATTR_COMPUTE_CAPABILITY_MAJOR = 75;
    static final int ATTR_COMPUTE_CAPABILITY_MINOR = 76;
    static final int ATTR_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;
    // cuda.h: CUfunction_attribute
    static final int FUNC_ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
    // cuda.h: CUstream_flags
    static final int STREAM_NON_BLOCKING = 0x1;

    private static volatile CudaDriver instance;

    final NativeLibs.Lib lib;
    private final MethodHandle cuInit, cuDriverGetVersion, cuDeviceGetCount, cuDeviceGet, cuDeviceGetName,
            cuDeviceGetAttribute, cuDevicePrimaryCtxRetain, cuDevicePrimaryCtxRelease, cuCtxSetCurrent,
            cuCtxSynchronize, cuMemAlloc, cuMemFree, cuMemGetInfo, cuMemcpyHtoDAsync, cuMemcpyDtoHAsync,
            cuMemcpyDtoDAsync, cuMemsetD8Async, cuModuleLoadData, cuModuleUnload, cuModuleGetFunction,
            cuFuncSetAttribute, cuLaunchKernel, cuStreamCreate, cuStreamDestroy, cuStreamSynchronize,
            cuGetErrorString, cuGetErrorName, cuStreamBeginCapture, cuStreamEndCapture, cuGraphInstantiate,
            cuGraphLaunch, cuGraphExecDestroy, cuGraphDestroy, cuEventCreate, cuEventRecord, cuEventSynchronize,
            cuEventElapsedTime, cuEventDestroy, cuTensorMapEncodeTiled;

    private CudaDriver(NativeLibs.Lib lib) {
        this.lib = lib;
        cuInit = lib.fn("cuInit", FunctionDescriptor.of(JAVA_INT, JAVA_INT));
        cuDriverGetVersion = lib.fn("cuDriverGetVersion", FunctionDescriptor.of(JAVA_INT, ADDRESS));
        cuDeviceGetCount = lib.fn("cuDeviceGetCount", FunctionDescriptor.of(JAVA_INT, ADDRESS));
        cuDeviceGet = lib.fn("cuDeviceGet", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT));
        cuDeviceGetName = lib.fn("cuDeviceGetName", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT));
        cuDeviceGetAttribute = lib.fn("cuDeviceGetAttribute", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT));
        cuDevicePrimaryCtxRetain = lib.fn("cuDevicePrimaryCtxRetain", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT));
        cuDevicePrimaryCtxRelease = lib.fn("cuDevicePrimaryCtxRelease_v2", FunctionDescriptor.of(JAVA_INT, JAVA_INT));
        cuCtxSetCurrent = lib.fn("cuCtxSetCurrent", FunctionDescriptor.of(JAVA_INT, ADDRESS));
        cuCtxSynchronize = lib.fn("cuCtxSynchronize", FunctionDescriptor.of(JAVA_INT));
        cuMemAlloc = lib.fn("cuMemAlloc_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG));
        cuMemFree = lib.fn("cuMemFree_v2", FunctionDescriptor.of(JAVA_INT, JAVA_LONG));
        cuMemGetInfo = lib.fn("cuMemGetInfo_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        cuMemcpyHtoDAsync = lib.fn("cuMemcpyHtoDAsync_v2", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, ADDRESS, JAVA_LONG, ADDRESS));
        cuMemcpyDtoHAsync = lib.fn("cuMemcpyDtoHAsync_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_LONG, ADDRESS));
        cuMemcpyDtoDAsync = lib.fn("cuMemcpyDtoDAsync_v2", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG, ADDRESS));
        cuMemsetD8Async = lib.fn("cuMemsetD8Async", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_BYTE, JAVA_LONG, ADDRESS));
        cuModuleLoadData = lib.fn("cuModuleLoadData", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        cuModuleUnload = lib.fn("cuModuleUnload", FunctionDescriptor.of(JAVA_INT, ADDRESS));
        cuModuleGetFunction = lib.fn("cuModuleGetFunction", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS));
        cuFuncSetAttribute = lib.fn("cuFuncSetAttribute", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT));
        cuLaunchKernel = lib.fn("cuLaunchKernel", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT,
                JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, ADDRESS, ADDRESS));
        cuStreamCreate = lib.fn("cuStreamCreate", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT));
        cuStreamDestroy = lib.fn("cuStreamDestroy_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS));
        cuStreamSynchronize = lib.fn("cuStreamSynchronize", FunctionDescriptor.of(JAVA_INT, ADDRESS));
        cuGetErrorString = lib.fn("cuGetErrorString", FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS));
        cuGetErrorName = lib.fn("cuGetErrorName", FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS));
        cuStreamBeginCapture = lib.fn("cuStreamBeginCapture_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT));
        cuStreamEndCapture = lib.fn("cuStreamEndCapture", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        cuGraphInstantiate = lib.fn("cuGraphInstantiateWithFlags", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, JAVA_LONG));
        cuGraphLaunch = lib.fn("cuGraphLaunch", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        cuGraphExecDestroy = lib.fn("cuGraphExecDestroy", FunctionDescriptor.of(JAVA_INT, ADDRESS));
        cuGraphDestroy = lib.fn("cuGraphDestroy", FunctionDescriptor.of(JAVA_INT, ADDRESS));
        cuEventCreate = lib.fn("cuEventCreate", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT));
        cuEventRecord = lib.fn("cuEventRecord", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        cuEventSynchronize = lib.fn("cuEventSynchronize", FunctionDescriptor.of(JAVA_INT, ADDRESS));
        cuEventElapsedTime = lib.fn("cuEventElapsedTime_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS));
        cuEventDestroy = lib.fn("cuEventDestroy_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS));
        cuTensorMapEncodeTiled = lib.fn("cuTensorMapEncodeTiled", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, JAVA_LONG,
                ADDRESS, ADDRESS, ADDRESS, ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT));
    }

    /** Loads libcuda and runs cuInit(0) once per process. */
    static CudaDriver get() {
        CudaDriver d = instance;
        if (d == null) {
            synchronized (CudaDriver.class) {
                d = instance;
                if (d == null) {
                    d = new CudaDriver(NativeLibs.load("the CUDA driver", "libcuda.so.1", "libcuda.so"));
                    d.check("cuInit", d.invokeInt(d.cuInit, 0));
                    instance = d;
                }
            }
        }
        return d;
    }

    // ---- error handling

    String errorText(int code) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment p = arena.allocate(ADDRESS);
            String name = "CUresult " + code, text = "";
            if ((int) cuGetErrorName.invokeExact(code, p) == 0 && !p.get(ADDRESS, 0).equals(MemorySegment.NULL)) {
                name = p.get(ADDRESS, 0).reinterpret(256).getString(0);
            }
            if ((int) cuGetErrorString.invokeExact(code, p) == 0 && !p.get(ADDRESS, 0).equals(MemorySegment.NULL)) {
                text = ": " + p.get(ADDRESS, 0).reinterpret(1024).getString(0);
            }
            return name + text;
        } catch (Throwable t) {
            return "CUresult " + code;
        }
    }

    void check(String call, int result) {
        if (result != 0) throw new FrugalException(call + " failed: " + errorText(result));
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

    private void call(String name, MethodHandle h, Object... args) {
        check(name, invokeInt(h, args));
    }

    // ---- device and context

    int driverVersion() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment v = arena.allocate(JAVA_INT);
            call("cuDriverGetVersion", cuDriverGetVersion, v);
            return v.get(JAVA_INT, 0);
        }
    }

    int deviceCount() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment v = arena.allocate(JAVA_INT);
            call("cuDeviceGetCount", cuDeviceGetCount, v);
            return v.get(JAVA_INT, 0);
        }
    }

    int device(int ordinal) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment v = arena.allocate(JAVA_INT);
            call("cuDeviceGet(" + ordinal + ")", cuDeviceGet, v, ordinal);
            return v.get(JAVA_INT, 0);
        }
    }

    String deviceName(int device) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment v = arena.allocate(256);
            call("cuDeviceGetName", cuDeviceGetName, v, 256, device);
            return v.getString(0);
        }
    }

    int attribute(int device, int attribute) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment v = arena.allocate(JAVA_INT);
            call("cuDeviceGetAttribute(" + attribute + ")", cuDeviceGetAttribute, v, attribute, device);
            return v.get(JAVA_INT, 0);
        }
    }

    MemorySegment primaryContextRetain(int device) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment v = arena.allocate(ADDRESS);
            call("cuDevicePrimaryCtxRetain", cuDevicePrimaryCtxRetain, v, device);
            return v.get(ADDRESS, 0);
        }
    }

    void primaryContextRelease(int device) {
        call("cuDevicePrimaryCtxRelease_v2", cuDevicePrimaryCtxRelease, device);
    }

    void setCurrent(MemorySegment context) {
        call("cuCtxSetCurrent", cuCtxSetCurrent, context);
    }

    void contextSynchronize() {
        call("cuCtxSynchronize", cuCtxSynchronize);
    }

    /** {free, total} bytes of device memory. */
    long[] memoryInfo() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment f = arena.allocate(JAVA_LONG), t = arena.allocate(JAVA_LONG);
            call("cuMemGetInfo_v2", cuMemGetInfo, f, t);
            return new long[]{f.get(JAVA_LONG, 0), t.get(JAVA_LONG, 0)};
        }
    }

    // ---- memory

    long malloc(long bytes) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment v = arena.allocate(JAVA_LONG);
            int r = invokeInt(cuMemAlloc, v, bytes);
            if (r != 0) {
                String mem = "";
                try {
                    long[] info = memoryInfo();
                    mem = " (" + (info[0] >> 20) + " MiB free of " + (info[1] >> 20) + " MiB)";
                } catch (FrugalException ignored) {
                    // report the allocation failure alone
                }
                throw new FrugalException("cuMemAlloc_v2 of " + bytes + " bytes failed: " + errorText(r) + mem);
            }
            return v.get(JAVA_LONG, 0);
        }
    }

    void free(long devicePtr) {
        call("cuMemFree_v2", cuMemFree, devicePtr);
    }

    void copyHtoD(long dst, MemorySegment src, long bytes, MemorySegment stream) {
        call("cuMemcpyHtoDAsync_v2", cuMemcpyHtoDAsync, dst, src, bytes, stream);
    }

    void copyDtoH(MemorySegment dst, long src, long bytes, MemorySegment stream) {
        call("cuMemcpyDtoHAsync_v2", cuMemcpyDtoHAsync, dst, src, bytes, stream);
    }

    void copyDtoD(long dst, long src, long bytes, MemorySegment stream) {
        call("cuMemcpyDtoDAsync_v2", cuMemcpyDtoDAsync, dst, src, bytes, stream);
    }

    void memsetD8(long dst, byte value, long bytes, MemorySegment stream) {
        call("cuMemsetD8Async", cuMemsetD8Async, dst, value, bytes, stream);
    }

    // ---- modules and launches

    MemorySegment moduleLoadData(MemorySegment image) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment v = arena.allocate(ADDRESS);
            call("cuModuleLoadData", cuModuleLoadData, v, image);
            return v.get(ADDRESS, 0);
        }
    }

    void moduleUnload(MemorySegment module) {
        call("cuModuleUnload", cuModuleUnload, module);
    }

    MemorySegment moduleFunction(MemorySegment module, String name) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment v = arena.allocate(ADDRESS);
            call("cuModuleGetFunction(" + name + ")", cuModuleGetFunction, v, module, arena.allocateFrom(name));
            return v.get(ADDRESS, 0);
        }
    }

    /** Bytes of a CUtensorMap, and its alignment. */
    static final int TENSOR_MAP_BYTES = 128, TENSOR_MAP_ALIGNMENT = 64;
    private static final int TENSOR_MAP_BF16 = 9, TENSOR_MAP_SWIZZLE_128B = 3, TENSOR_MAP_L2_256B = 3;

    /**
     * Writes into map the bulk tensor copy descriptor of the row-major bf16 matrix [rows × cols] at device address
     * `address`: boxes of boxRows × boxCols elements (boxCols · 2 bytes = 128, the swizzle's line), landing in shared
     * memory 128-byte swizzled (wgmma's layout); elements out of bounds read as zero.
     */
    void encodeTensorMap(MemorySegment map, long address, long rows, long cols, int boxRows, int boxCols) {
        try (Arena arena = Arena.ofConfined()) {
            call("cuTensorMapEncodeTiled", cuTensorMapEncodeTiled, map, TENSOR_MAP_BF16, 2, address,
                    arena.allocateFrom(JAVA_LONG, cols, rows), arena.allocateFrom(JAVA_LONG, 2 * cols),
                    arena.allocateFrom(JAVA_INT, boxCols, boxRows), arena.allocateFrom(JAVA_INT, 1, 1),
                    0, TENSOR_MAP_SWIZZLE_128B, TENSOR_MAP_L2_256B, 0);
        }
    }

    void functionAttribute(MemorySegment function, int attribute, int value) {
        call("cuFuncSetAttribute", cuFuncSetAttribute, function, attribute, value);
    }

    void launch(String name, MemorySegment function, int gx, int gy, int gz, int bx, int by, int bz, int sharedBytes,
                MemorySegment stream, MemorySegment params) {
        int r;
        try {
            r = (int) cuLaunchKernel.invokeExact(function, gx, gy, gz, bx, by, bz, sharedBytes, stream, params, MemorySegment.NULL);
        } catch (Throwable t) {
            throw new FrugalException("cuLaunchKernel(" + name + ") failed: " + t, t);
        }
        if (r != 0) {
            throw new FrugalException("cuLaunchKernel(" + name + ", grid " + gx + "x" + gy + "x" + gz + ", block " + bx + "x"
                    + by + "x" + bz + ", " + sharedBytes + " B shared) failed: " + errorText(r));
        }
    }

    MemorySegment streamCreate(int flags) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment v = arena.allocate(ADDRESS);
            call("cuStreamCreate", cuStreamCreate, v, flags);
            return v.get(ADDRESS, 0);
        }
    }

    void streamDestroy(MemorySegment stream) {
        call("cuStreamDestroy_v2", cuStreamDestroy, stream);
    }

    void streamSynchronize(MemorySegment stream) {
        call("cuStreamSynchronize", cuStreamSynchronize, stream);
    }

    // ---- graphs (cuda.h: CUstreamCaptureMode CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1)

    static final int CAPTURE_MODE_THREAD_LOCAL = 1;

    void beginCapture(MemorySegment stream) {
        call("cuStreamBeginCapture_v2", cuStreamBeginCapture, stream, CAPTURE_MODE_THREAD_LOCAL);
    }

    /** Ends the capture and returns the graph. */
    MemorySegment endCapture(MemorySegment stream) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment v = arena.allocate(ADDRESS);
            call("cuStreamEndCapture", cuStreamEndCapture, stream, v);
            return v.get(ADDRESS, 0);
        }
    }

    MemorySegment graphInstantiate(MemorySegment graph) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment v = arena.allocate(ADDRESS);
            call("cuGraphInstantiateWithFlags", cuGraphInstantiate, v, graph, 0L);
            return v.get(ADDRESS, 0);
        }
    }

    void graphLaunch(MemorySegment exec, MemorySegment stream) {
        call("cuGraphLaunch", cuGraphLaunch, exec, stream);
    }

    void graphExecDestroy(MemorySegment exec) {
        call("cuGraphExecDestroy", cuGraphExecDestroy, exec);
    }

    void graphDestroy(MemorySegment graph) {
        call("cuGraphDestroy", cuGraphDestroy, graph);
    }

    // ---- events (cuda.h: CU_EVENT_DEFAULT = 0, timing enabled)

    MemorySegment eventCreate() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment v = arena.allocate(ADDRESS);
            call("cuEventCreate", cuEventCreate, v, 0);
            return v.get(ADDRESS, 0);
        }
    }

    void eventRecord(MemorySegment event, MemorySegment stream) {
        call("cuEventRecord", cuEventRecord, event, stream);
    }

    /** Milliseconds between two recorded events (waits for the second). */
    float eventElapsed(MemorySegment start, MemorySegment end) {
        call("cuEventSynchronize", cuEventSynchronize, end);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment v = arena.allocate(JAVA_FLOAT);
            call("cuEventElapsedTime_v2", cuEventElapsedTime, v, start, end);
            return v.get(JAVA_FLOAT, 0);
        }
    }

    void eventDestroy(MemorySegment event) {
        call("cuEventDestroy_v2", cuEventDestroy, event);
    }
}
