package frugal.backend.cuda;

import frugal.FrugalException;
import frugal.backend.Backend;
import frugal.quant.QuantFormat;
import frugal.quant.Quantized;
import frugal.tensor.DType;
import frugal.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The GPU backend: CUDA driver API, NVRTC-compiled kernels and cuBLASLt, all through java.lang.foreign. Tensors
 * hold device addresses ({@code MemorySegment.ofAddress(ptr).reinterpret(bytes)}), never dereferenced on the host;
 * {@code slice} and {@code view} work on them as on host tensors.
 *
 * <p>All work is queued on one stream of the device's primary context; {@link #download} and {@link #synchronize}
 * wait for it. One backend is meant for one thread at a time (it makes its context current on whichever thread
 * calls it). Float32 ops now; the layouts and the cuBLASLt plan cache take a data type, so bf16 can be added op by op.
 */
public final class CudaBackend implements Backend {
    private static final String ELEMENTWISE = "elementwise.cu", NORMS = "norms.cu", LOSS = "loss.cu", OPTIM = "optim.cu",
            ATTENTION = "attention.cu", FLASH = "flash.cu", QUANT = "quant.cu", STASH_NORMS = "stash_norms.cu",
            STASH_GELU = "stash_gelu.cu", STASH_GEMM = "stash_gemm.cu";
    private static final int ATTENTION_WARPS = 8;
    /**
     * FRUGAL_CUDA_BIAS_EPILOGUE, FRUGAL_CUDA_GELU_EPILOGUE, FRUGAL_CUDA_DGELU_EPILOGUE (each 1 by default): 0 does that
     * cuBLASLt epilogue's work (bias add, GELU, GELU backward) in separate kernels instead, to time what it saves.
     * FRUGAL_CUDA_BGRAD_EPILOGUE (0 by default; 1 turns it on): cuBLASLt does the BGRADB bias gradient in a reduction
     * kernel of its own after the product, plus our add into the accumulating gradient, which took longer than the
     * bias_backward kernel alone (H100, 2026-11-23: 32.55 ms a GPT-2 step with it, 32.20 without).
     */
    private static final boolean BIAS_EPILOGUE = epilogueOn("FRUGAL_CUDA_BIAS_EPILOGUE"),
            GELU_EPILOGUE = epilogueOn("FRUGAL_CUDA_GELU_EPILOGUE"), DGELU_EPILOGUE = epilogueOn("FRUGAL_CUDA_DGELU_EPILOGUE");
    /**
     * FRUGAL_CUDA_GELU_SPLIT (1 by default): where the stash keeps GELU's input only quantized, the product writes it with
     * the plain bias epilogue and one pass of stash_gelu.cu writes GELU of it and its quantized copy
     * ({@link #linearGeluForwardQuantized}); 0: the GELU epilogue writes both, then quantize reads the input again.
     */
    static final boolean GELU_SPLIT = epilogueOn("FRUGAL_CUDA_GELU_SPLIT");
    private static volatile Boolean available;
    private static volatile String unavailableReason = "not checked";

    private final CudaDriver cu;
    private final int ordinal;
    private final int device;
    private final MemorySegment context;
    private final MemorySegment stream;
    private final int arch;
    private final int smCount;
    private final String deviceName;
    private final Kernels kernels;
    private final CublasLt blas;
    private final boolean tf32;
    /** Activation type: F32, or BF16 for mixed precision. */
    private final DType activations;
    private long allocatedBytes;
    private long peakBytes;
    private boolean capturing;
    /** Live allocations by device address, with their sizes; freed by {@link #release} or {@link #close}. */
    private final Map<Long, Long> allocations = new LinkedHashMap<>();
    private long scratchPtr;
    private long scratchBytes;
    /** quant.cu's error word: why blocks were stored as NaN since the last check (bits QUANT_*); see {@link #quantize}. */
    private final Tensor quantErrors;
    /** Whether quantize kernels ran (or a graph holding some was replayed) since {@link #checkQuantized} last looked. */
    private boolean quantizeUnchecked;
    /** quantize calls so far: a graph whose capture made some sets {@link #quantizeUnchecked} when replayed. */
    private long quantizeCalls;
    private Thread boundThread;
    private boolean closed;

    /**
     * Device 0 with bf16 mixed precision, unless {@code FRUGAL_CUDA_PRECISION=fp32} (then exact fp32 products, or TF32
     * with {@code FRUGAL_CUDA_TF32=true}).
     */
    public CudaBackend() {
        this(0, Boolean.parseBoolean(System.getenv().getOrDefault("FRUGAL_CUDA_TF32", "false")),
                "fp32".equalsIgnoreCase(System.getenv().getOrDefault("FRUGAL_CUDA_PRECISION", "bf16")) ? DType.F32 : DType.BF16);
    }

    /** Float32 activations (the reference-precision mode of the op tests). */
    public CudaBackend(int ordinal, boolean tf32) {
        this(ordinal, tf32, DType.F32);
    }

    /**
     * @param ordinal the CUDA device
     * @param tf32    matrix products of fp32 tensors with TF32 tensor cores (about 3e-4 relative error) instead of
     *                exact fp32
     */
    public CudaBackend(int ordinal, boolean tf32, DType activations) {
        if (activations != DType.F32 && activations != DType.BF16) {
            throw new FrugalException("the CUDA backend computes in F32 or BF16, not " + activations);
        }
        this.activations = activations;
        this.cu = CudaDriver.get();
        this.ordinal = ordinal;
        this.tf32 = tf32;
        int count = cu.deviceCount();
        if (ordinal < 0 || ordinal >= count) {
            throw new FrugalException("CUDA device " + ordinal + " requested, but " + count + " device(s) are visible");
        }
        device = cu.device(ordinal);
        deviceName = cu.deviceName(device);
        arch = cu.attribute(device, CudaDriver.ATTR_COMPUTE_CAPABILITY_MAJOR) * 10
                + cu.attribute(device, CudaDriver.ATTR_COMPUTE_CAPABILITY_MINOR);
        smCount = cu.attribute(device, CudaDriver.ATTR_MULTIPROCESSOR_COUNT);
        int maxShared = cu.attribute(device, CudaDriver.ATTR_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
        context = cu.primaryContextRetain(device);
        cu.setCurrent(context);
        boundThread = Thread.currentThread();
        stream = cu.streamCreate(CudaDriver.STREAM_NON_BLOCKING);
        kernels = new Kernels(cu, arch, maxShared, stream);
        blas = new CublasLt(cu, stream);
        peakBytes = allocatedBytes = CublasLt.WORKSPACE_BYTES;
        quantErrors = allocate(DType.I32, 1);
    }

    /**
     * True when the CUDA driver, NVRTC and cuBLASLt load and at least one GPU is visible. Never throws; the reason
     * for a false is in {@link #unavailableReason()}.
     */
    public static boolean isAvailable() {
        Boolean a = available;
        if (a == null) {
            synchronized (CudaBackend.class) {
                a = available;
                if (a == null) {
                    try {
                        CudaDriver d = CudaDriver.get();
                        if (d.deviceCount() < 1) {
                            unavailableReason = "the CUDA driver sees no GPU";
                            a = false;
                        } else {
                            Nvrtc.get().version();
                            CublasLt.library();
                            unavailableReason = "";
                            a = true;
                        }
                    } catch (Throwable t) {
                        unavailableReason = t.getMessage() == null ? t.toString() : t.getMessage();
                        a = false;
                    }
                    available = a;
                }
            }
        }
        return a;
    }

    public static String unavailableReason() {
        isAvailable();
        return unavailableReason;
    }

    @Override
    public String name() {
        return "cuda:" + ordinal + " (" + deviceName + ", sm_" + arch + ", " + (activations == DType.BF16 ? "bf16 mixed precision"
                : tf32 ? "fp32, tf32 products" : "fp32") + ")";
    }

    @Override
    public DType activationType() {
        return activations;
    }

    /** The most device memory held by this backend's allocations so far (tensors, scratch, cuBLASLt workspace). */
    @Override
    public long peakMemory() {
        return peakBytes;
    }

    private void allocated(long bytes) {
        allocatedBytes += bytes;
        peakBytes = Math.max(peakBytes, allocatedBytes);
    }

    /** Whether fp32 matrix products use TF32 tensor cores. */
    public boolean tf32() {
        return tf32;
    }

    public int computeCapability() {
        return arch;
    }

    /** {free, total} bytes of device memory. */
    public long[] memoryInfo() {
        bind();
        return cu.memoryInfo();
    }

    private void bind() {
        if (closed) throw new FrugalException("the CUDA backend is closed");
        Thread t = Thread.currentThread();
        if (t != boundThread) {
            cu.setCurrent(context);
            boundThread = t;
        }
    }

    // ---- memory

    @Override
    public Tensor allocate(DType dtype, int... shape) {
        bind();
        long bytes = Math.max(1, Tensor.count(shape) * dtype.bytes);
        long rounded = (bytes + 255) & ~255L;
        if (capturing) throw new FrugalException("allocate(" + dtype + ") while capturing a graph");
        long ptr = cu.malloc(rounded);
        allocations.put(ptr, rounded);
        allocated(rounded);
        cu.memsetD8(ptr, (byte) 0, rounded, stream);
        return new Tensor(MemorySegment.ofAddress(ptr).reinterpret(bytes), dtype, shape);
    }

    /** Frees a tensor made by {@link #allocate} (not a slice or view of one) now rather than at {@link #close}. */
    public void release(Tensor t) {
        bind();
        long ptr = t.data().address();
        Long size = allocations.remove(ptr);
        if (size == null) {
            throw new FrugalException("release: " + t + " at 0x" + Long.toHexString(ptr) + " is not an allocation of this backend");
        }
        cu.streamSynchronize(stream);
        cu.free(ptr);
        allocatedBytes -= size;
    }

    /** A device buffer of at least {@code bytes} for temporaries of one op; reused by the next op on the stream. */
    private long scratch(long bytes) {
        if (bytes > scratchBytes) {
            if (capturing) throw new FrugalException("scratch of " + bytes + " bytes needed while capturing a graph");
            if (scratchPtr != 0) {
                allocatedBytes -= scratchBytes;
                cu.streamSynchronize(stream);
                cu.free(scratchPtr);
            }
            scratchBytes = Math.max(bytes, 1 << 20);
            scratchPtr = cu.malloc(scratchBytes);
            allocated(scratchBytes);
        }
        return scratchPtr;
    }

    private Tensor scratchTensor(long bytes) {
        long ptr = scratch(bytes);
        return new Tensor(MemorySegment.ofAddress(ptr).reinterpret(bytes), DType.I8, (int) bytes);
    }

    @Override
    public void upload(Tensor dst, MemorySegment host) {
        bind();
        noCapture("upload");
        long bytes = dst.byteSize();
        checkHost("upload", host, bytes);
        if (host.isNative()) {
            cu.copyHtoD(dst.data().address(), host, bytes, stream);
            cu.streamSynchronize(stream); // the caller may free or reuse host memory as soon as we return
        } else {
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment staging = arena.allocate(bytes, 64);
                MemorySegment.copy(host, 0, staging, 0, bytes);
                cu.copyHtoD(dst.data().address(), staging, bytes, stream);
                cu.streamSynchronize(stream);
            }
        }
    }

    @Override
    public void download(Tensor src, MemorySegment host) {
        bind();
        noCapture("download");
        long bytes = src.byteSize();
        checkHost("download", host, bytes);
        if (host.isNative()) {
            cu.copyDtoH(host, src.data().address(), bytes, stream);
            cu.streamSynchronize(stream);
        } else {
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment staging = arena.allocate(bytes, 64);
                cu.copyDtoH(staging, src.data().address(), bytes, stream);
                cu.streamSynchronize(stream);
                MemorySegment.copy(staging, 0, host, 0, bytes);
            }
        }
        checkQuantized();
    }

    private static void checkHost(String op, MemorySegment host, long bytes) {
        if (host.byteSize() < bytes) {
            throw new FrugalException(op + ": host segment of " + host.byteSize() + " bytes is smaller than the tensor's " + bytes);
        }
    }

    @Override
    public void zero(Tensor t) {
        bind();
        if (t.byteSize() > 0) cu.memsetD8(t.data().address(), (byte) 0, t.byteSize(), stream);
    }

    @Override
    public void copy(Tensor dst, Tensor src) {
        bind();
        if (dst.byteSize() < src.byteSize()) {
            throw new FrugalException("copy: " + dst + " is smaller than " + src);
        }
        if (src.byteSize() > 0) cu.copyDtoD(dst.data().address(), src.data().address(), src.byteSize(), stream);
    }

    @Override
    public void synchronize() {
        bind();
        noCapture("synchronize");
        cu.streamSynchronize(stream);
        checkQuantized();
    }

    private void noCapture(String op) {
        if (capturing) throw new FrugalException(op + " while capturing a graph: a captured step must stay on the device");
    }

    @Override
    public void convert(Tensor dst, Tensor src, long n) {
        bind();
        if (dst == src || n == 0) return;
        need("convert", "dst", dst, n);
        need("convert", "src", src, n);
        if (dst.dtype() == src.dtype()) {
            cu.copyDtoD(dst.data().address(), src.data().address(), n * dst.dtype().bytes, stream);
        } else if (dst.dtype() == DType.BF16 && src.dtype() == DType.F32) {
            elementwise(ELEMENTWISE, "convert_f32_to_bf16", n, dst, src, n);
        } else if (dst.dtype() == DType.F32 && src.dtype() == DType.BF16) {
            elementwise(ELEMENTWISE, "convert_bf16_to_f32", n, dst, src, n);
        } else {
            throw new FrugalException("convert: " + src + " to " + dst + " is not supported");
        }
    }

    // ---- graphs

    /** A captured CUDA graph, replayed on the backend's stream. */
    private final class CudaGraph implements Graph {
        private MemorySegment graph, exec;
        private final boolean quantizes;

        CudaGraph(MemorySegment graph, MemorySegment exec, boolean quantizes) {
            this.graph = graph;
            this.exec = exec;
            this.quantizes = quantizes;
        }

        @Override
        public void replay() {
            bind();
            if (exec == null) throw new FrugalException("replay of a closed graph");
            cu.graphLaunch(exec, stream);
            if (quantizes) quantizeUnchecked = true;
            if (Kernels.SYNC_EACH_LAUNCH) cu.streamSynchronize(stream);
        }

        @Override
        public void close() {
            if (exec != null && !closed) {
                cu.setCurrent(context);
                cu.streamSynchronize(stream);
                cu.graphExecDestroy(exec);
                cu.graphDestroy(graph);
            }
            exec = null;
            graph = null;
        }
    }

    @Override
    public Graph capture(Runnable work) {
        bind();
        if (Kernels.SYNC_EACH_LAUNCH) return null; // per-launch synchronization cannot be captured
        cu.streamSynchronize(stream);
        long quantizeCallsBefore = quantizeCalls;
        cu.beginCapture(stream);
        capturing = true;
        MemorySegment graph;
        try {
            work.run();
        } catch (RuntimeException | Error e) {
            capturing = false;
            try {
                MemorySegment g = cu.endCapture(stream);
                if (!g.equals(MemorySegment.NULL)) cu.graphDestroy(g);
            } catch (RuntimeException ignored) {
                // the capture is invalid anyway; report the work's failure
            }
            throw e;
        } finally {
            capturing = false;
        }
        graph = cu.endCapture(stream);
        return new CudaGraph(graph, cu.graphInstantiate(graph), quantizeCalls > quantizeCallsBefore);
    }

    // ---- launch helpers

    private static void f32(String op, Tensor... ts) {
        for (Tensor t : ts) {
            if (t != null && t.dtype() != DType.F32) {
                throw new FrugalException(op + " on the CUDA backend takes F32 tensors, got " + t);
            }
        }
    }

    private static void need(String op, String what, Tensor t, long elements) {
        if (t.size() < elements) {
            throw new FrugalException(op + ": " + what + " " + t + " holds " + t.size() + " elements, " + elements + " needed");
        }
    }

    /** Blocks for a grid-stride loop over n elements with 256 threads each. */
    private int blocks(long n) {
        return (int) Math.max(1, Math.min((n + 255) / 256, (long) smCount * 32));
    }

    private void elementwise(String file, String kernel, long n, Object... args) {
        if (n <= 0) return;
        kernels.launch(file, kernel, blocks(n), 1, 1, 256, 1, 1, 0, args);
    }

    private static int rowThreads(int cols) {
        return cols >= 1024 ? 512 : cols >= 256 ? 256 : 128;
    }

    /**
     * The activation type shared by {@code ts} (F32 or BF16; nulls skipped) as a kernel-name suffix, "f32" or "bf16".
     */
    private static String act(String op, Tensor... ts) {
        DType type = null;
        for (Tensor t : ts) {
            if (t == null) continue;
            if (t.dtype() != DType.F32 && t.dtype() != DType.BF16) {
                throw new FrugalException(op + " on the CUDA backend takes F32 or BF16 activations, got " + t);
            }
            if (type == null) type = t.dtype();
            else if (t.dtype() != type) {
                throw new FrugalException(op + ": activations of one type expected, got " + type + " and " + t);
            }
        }
        return type == DType.BF16 ? "bf16" : "f32";
    }

    private static boolean aligned16(Tensor... ts) {
        for (Tensor t : ts) if ((t.data().address() & 15) != 0) return false;
        return true;
    }

    private static boolean epilogueOn(String variable) {
        return !"0".equals(System.getenv(variable));
    }

    private static int cudaType(DType t) {
        return switch (t) {
            case F32 -> CublasLt.CUDA_R_32F;
            case BF16 -> CublasLt.CUDA_R_16BF;
            default -> throw new FrugalException("matmul on the CUDA backend takes F32 or BF16, got " + t);
        };
    }

    // ---- linear algebra

    @Override
    public void matmul(Tensor out, Tensor a, Tensor b, int m, int n, int k, boolean transA, boolean transB, boolean accumulate) {
        bind();
        if (a.dtype() != b.dtype()) throw new FrugalException("matmul: operands of one type expected, got " + a + " and " + b);
        need("matmul", "a", a, (long) m * k);
        need("matmul", "b", b, (long) k * n);
        need("matmul", "out", out, (long) m * n);
        if (m == 0 || n == 0) return;
        if (k == 0) {
            if (!accumulate) cu.memsetD8(out.data().address(), (byte) 0, (long) m * n * out.dtype().bytes, stream);
            return;
        }
        int abType = cudaType(a.dtype()), cType = cudaType(out.dtype());
        if (abType == CublasLt.CUDA_R_32F && cType != CublasLt.CUDA_R_32F) {
            throw new FrugalException("matmul: F32 operands write F32, not " + out);
        }
        blas.matmul(out.data().address(), a.data().address(), b.data().address(), m, n, k, transA, transB, accumulate,
                abType, cType, computeType(abType), !capturing);
    }

    /** cuBLAS's compute type for operands of abType: fp32 accumulation, TF32 products for fp32 operands when asked. */
    private int computeType(int abType) {
        return abType == CublasLt.CUDA_R_32F && tf32 ? CublasLt.CUBLAS_COMPUTE_32F_FAST_TF32 : CublasLt.CUBLAS_COMPUTE_32F;
    }

    @Override
    public void linearForward(Tensor out, Tensor a, Tensor b, Tensor bias, int m, int n, int k) {
        bind();
        if (!BIAS_EPILOGUE || !linearEpilogue("linearForward", out, null, a, b, bias, m, n, k)) {
            Backend.super.linearForward(out, a, b, f32Bias(bias), m, n, k);
        }
    }

    /** bias as addBias takes it: F32, a compute copy converted into the scratch buffer. */
    private Tensor f32Bias(Tensor bias) {
        if (bias == null || bias.dtype() == DType.F32) return bias;
        Tensor f = new Tensor(scratchTensor(4L * bias.size()).data(), DType.F32, (int) bias.size());
        convert(f, bias, bias.size());
        return f;
    }

    @Override
    public void linearGeluForward(Tensor act, Tensor pre, Tensor a, Tensor b, Tensor bias, int m, int n, int k) {
        bind();
        if (!GELU_EPILOGUE || !linearEpilogue("linearGeluForward", act, pre, a, b, bias, m, n, k)) {
            Backend.super.linearGeluForward(act, pre, a, b, f32Bias(bias), m, n, k);
        }
    }

    @Override
    public void linearForwardQuantized(Tensor out, Quantized outq, Tensor a, Tensor b, Tensor bias, int m, int n, int k) {
        bind();
        if (!stashGemm("linearForwardQuantized", false, out, outq, a, b, bias, m, n, k)) {
            Backend.super.linearForwardQuantized(out, outq, a, b, bias, m, n, k);
        }
    }

    /**
     * On Hopper with FRUGAL_CUDA_STASH_GEMM=1, stash_gemm.cu's product: it writes act and preq, and pre stays unwritten.
     * Else, where {@link #geluQuantize} takes them (and GELU_SPLIT), the product with the bias epilogue writes pre, then
     * geluQuantize act and preq: cuBLASLt's GELU epilogue costs more than a pass over pre, which quantize makes anyway.
     */
    @Override
    public void linearGeluForwardQuantized(Tensor act, Tensor pre, Quantized preq, Tensor a, Tensor b, Tensor bias, int m, int n, int k) {
        bind();
        if (stashGemm("linearGeluForwardQuantized", true, act, preq, a, b, bias, m, n, k)) return;
        if (GELU_SPLIT && geluQuantizeTakes(act, pre, preq, (long) m * n)) {
            linearForward(pre, a, b, bias, m, n, k);
            geluQuantize(act, pre, preq, (long) m * n);
            return;
        }
        Backend.super.linearGeluForwardQuantized(act, pre, preq, a, b, bias, m, n, k);
    }

    /** Whether stash_gelu.cu's gelu_quantize takes these: bf16, n a multiple of 8, act aligned, a fast quantize format. */
    boolean geluQuantizeTakes(Tensor act, Tensor pre, Quantized preq, long n) {
        return n > 0 && n % 8 == 0 && act.dtype() == DType.BF16 && pre.dtype() == DType.BF16 && aligned16(act)
                && fastQuant(preq.format(), pre, preq.packed());
    }

    /**
     * act = GELU(pre) and preq = pre quantized: geluForward then quantize, in one pass of stash_gelu.cu where
     * {@link #geluQuantizeTakes} (and the stash's quantization is fused).
     */
    void geluQuantize(Tensor act, Tensor pre, Quantized preq, long n) {
        QuantFormat f = preq.format();
        if (!stashFusion || !geluQuantizeTakes(act, pre, preq, n)) {
            geluForward(act, pre, n);
            quantize(preq.packed(), preq.scales(), pre, n, f, preq.seed());
            return;
        }
        need("geluQuantize", "act", act, n);
        need("geluQuantize", "pre", pre, n);
        f.checkBuffers(preq.packed(), preq.scales(), n);
        long groups = f.blocks(n) * (f.block() / 8);
        kernels.launch(STASH_GELU, "gelu_quantize_q" + f.bits() + "_bf16", fastQuantGrid(groups), 1, 1, QUANT_FAST_THREADS, 1, 1, 0,
                act, preq.packed(), preq.scales(), pre, n, groups, Integer.numberOfTrailingZeros(f.block() / 8),
                f.scheme() == QuantFormat.Scheme.INT ? 1 : 0, f.rounding() == QuantFormat.Rounding.STOCHASTIC ? 1 : 0,
                QuantFormat.seedBits(preq.seed()), aligned4(preq.scales()), quantErrors);
        quantizeCalls++;
        quantizeUnchecked = true;
    }

    /**
     * Whether stash_gemm.cu's product takes these operands: on Hopper, bf16 operands (bias bf16 or none), n a multiple of
     * 256, k of 64, a 16-byte aligned (its rows for the bulk copies), 3-, 4- or 8-bit formats of the fast quantize
     * kernels, and switched on (FRUGAL_CUDA_STASH_GEMM=1; STASH_FUSED=0 switches it off too).
     */
    boolean stashGemmTakes(Tensor out, Quantized q, Tensor a, Tensor w, Tensor bias, int m, int n, int k) {
        int bits = q.format().bits();
        return stashFusion && stashGemm && arch == 90 && m > 0 && n % 256 == 0 && k % 64 == 0 && (bits == 3 || bits == 4 || bits == 8)
                && out.dtype() == DType.BF16 && a.dtype() == DType.BF16 && w.dtype() == DType.BF16
                && (bias == null || bias.dtype() == DType.BF16) && fastQuant(q.format(), out, q.packed()) && aligned16(out, a, w);
    }

    /**
     * Bytes of shared memory of stash_gemm.cu's blocks: 3 stages of (128 + 256) rows × 64 bf16, the staged 128 × 256 bf16
     * product, 8 warps' 33 staging slots, 6 barriers, and the alignment.
     */
    private static final int STASH_GEMM_SHARED = 3 * (128 + 256) * 64 * 2 + 128 * 256 * 2 + 8 * 33 * 8 + 6 * 8 + 1024;

    /** Tensor maps (bulk-copy descriptors) by matrix and box, built once: a step's tensors keep their addresses. */
    private final Map<TensorMapKey, MemorySegment> tensorMaps = new HashMap<>();
    private final Arena tensorMapArena = Arena.ofShared();

    private record TensorMapKey(long address, int rows, int cols, int boxRows) {
    }

    /** The tensor map of the bf16 matrix t [rows × cols] read in boxes of boxRows × 64 (CudaDriver.encodeTensorMap). */
    private MemorySegment tensorMap(Tensor t, int rows, int cols, int boxRows) {
        return tensorMaps.computeIfAbsent(new TensorMapKey(t.data().address(), rows, cols, boxRows), key -> {
            MemorySegment map = tensorMapArena.allocate(CudaDriver.TENSOR_MAP_BYTES, CudaDriver.TENSOR_MAP_ALIGNMENT);
            cu.encodeTensorMap(map, key.address(), rows, cols, boxRows, 64);
            return map;
        });
    }

    /**
     * out[m,n] = a[m,k]·w[n,k]ᵀ + bias, or GELU of it, with the product's quantized copy q, in stash_gemm.cu's product
     * ({@link #stashGemmTakes}). False, having queued nothing, where it does not take them.
     */
    private boolean stashGemm(String op, boolean gelu, Tensor out, Quantized q, Tensor a, Tensor w, Tensor bias, int m, int n, int k) {
        if (!stashGemmTakes(out, q, a, w, bias, m, n, k)) return false;
        QuantFormat f = q.format();
        need(op, "a", a, (long) m * k);
        need(op, "w", w, (long) n * k);
        need(op, "out", out, (long) m * n);
        if (bias != null) need(op, "bias", bias, n);
        f.checkBuffers(q.packed(), q.scales(), (long) m * n);
        int tiles = n / 256 * ((m + 127) / 128);
        kernels.launch(STASH_GEMM, (gelu ? "gemm_gelu_q" : "gemm_q") + f.bits() + "_bf16", Math.min(tiles, smCount), 1, 1, 384, 1, 1,
                STASH_GEMM_SHARED, tensorMap(a, m, k, 128), tensorMap(w, n, k, 256), out, bias, m, n, k, q.packed(), q.scales(),
                QuantFormat.seedBits(q.seed()), aligned4(q.scales()), Integer.numberOfTrailingZeros(f.block() / 8),
                f.scheme() == QuantFormat.Scheme.INT ? 1 : 0, f.rounding() == QuantFormat.Rounding.STOCHASTIC ? 1 : 0, quantErrors);
        quantizeCalls++;
        quantizeUnchecked = true;
        return true;
    }

    /**
     * out[m,n] = a[m,k]·b[n,k]ᵀ + bias in one cuBLASLt product, the bias added in its epilogue; with pre non-null,
     * pre = a·bᵀ + bias and out = GELU(pre) (GELU_AUX_BIAS). False, having queued nothing, where the epilogue cannot take
     * these operands or cuBLASLt has no algorithm for them (the rounded bias may have been queued). GELU is fused for bf16 outputs only: cuBLAS does not say how
     * exactly its epilogue evaluates tanh, and the fp32 mode is the reference precision (1e-4 against the CPU).
     */
    private boolean linearEpilogue(String op, Tensor out, Tensor pre, Tensor a, Tensor b, Tensor bias, int m, int n, int k) {
        if (bias == null || m == 0 || n == 0 || k == 0 || a.dtype() != b.dtype()) return false;
        // aux (pre) is of out's type, its leading dimension (n) a multiple of 8
        if (pre != null && (out.dtype() != DType.BF16 || pre.dtype() != DType.BF16 || n % 8 != 0)) return false;
        int abType = cudaType(a.dtype()), cType = cudaType(out.dtype()), compute = computeType(abType);
        if (abType == CublasLt.CUDA_R_32F && cType != CublasLt.CUDA_R_32F) return false;
        if (bias.dtype() != DType.F32 && bias.dtype() != out.dtype()) {
            throw new FrugalException(op + ": bias must be F32 or of the output's type " + out.dtype() + ", got " + bias);
        }
        need(op, "a", a, (long) m * k);
        need(op, "b", b, (long) k * n);
        need(op, "out", out, (long) m * n);
        need(op, "bias", bias, n);
        if (pre != null) need(op, "pre", pre, (long) m * n);
        // the epilogue adds a bias of out's type: for a bf16 out an fp32 bias is rounded to bf16 first (a compute copy is already)
        Tensor epilogueBias = bias.dtype() == out.dtype() ? bias : new Tensor(scratchTensor(2L * n).data(), out.dtype(), n);
        CublasLt.Epilogue epilogue = pre == null ? CublasLt.Epilogue.BIAS : CublasLt.Epilogue.GELU_AUX_BIAS;
        long o = out.data().address(), x = a.data().address(), w = b.data().address(), bb = epilogueBias.data().address();
        long aux = pre == null ? 0 : pre.data().address();
        if (!blas.supports(epilogue, o, x, w, bb, aux, m, n, k, false, true, abType, cType, compute)) return false;
        if (epilogueBias != bias) convert(epilogueBias, bias, n);
        return blas.matmul(o, x, w, epilogue, bb, aux, m, n, k, false, true, false, abType, cType, compute, !capturing);
    }

    private boolean bgradEpilogue = "1".equals(System.getenv("FRUGAL_CUDA_BGRAD_EPILOGUE"));

    void useBgradEpilogue(boolean on) {
        bgradEpilogue = on;
    }

    @Override
    public void linearWeightBackward(Tensor dweight, Tensor dbias, Tensor dout, Tensor a, int m, int n, int k) {
        bind();
        if (!bgradEpilogue || !weightBackwardEpilogue(dweight, dbias, dout, a, m, n, k)) {
            Backend.super.linearWeightBackward(dweight, dbias, dout, a, m, n, k);
        }
    }

    /**
     * dweight[n,k] += dout[m,n]ᵀ·a[m,k] with Σ dout from the same cuBLASLt product (BGRADB: dout is the operand it
     * reduces over m). The epilogue writes the sums, where dbias accumulates: they go to an fp32 scratch vector, then
     * one n-element add into dbias. False, having queued nothing, where cuBLASLt has no algorithm for it.
     */
    private boolean weightBackwardEpilogue(Tensor dweight, Tensor dbias, Tensor dout, Tensor a, int m, int n, int k) {
        if (dbias == null || m == 0 || n == 0 || k == 0 || dout.dtype() != a.dtype() || dweight.dtype() != DType.F32) return false;
        f32("linearWeightBackward", dbias);
        need("linearWeightBackward", "dout", dout, (long) m * n);
        need("linearWeightBackward", "a", a, (long) m * k);
        need("linearWeightBackward", "dweight", dweight, (long) n * k);
        need("linearWeightBackward", "dbias", dbias, n);
        int abType = cudaType(a.dtype()), compute = computeType(abType), f32 = CublasLt.CUDA_R_32F;
        Tensor sums = new Tensor(scratchTensor(4L * n).data(), DType.F32, n);
        long w = dweight.data().address(), dy = dout.data().address(), x = a.data().address(), s = sums.data().address();
        // the product as matmul(dweight, dout, a, n, k, m, transA, !transB, accumulate)
        if (!blas.supports(CublasLt.Epilogue.BGRADB, w, dy, x, s, 0, n, k, m, true, false, abType, f32, compute)) return false;
        if (!blas.matmul(w, dy, x, CublasLt.Epilogue.BGRADB, s, 0, n, k, m, true, false, true, abType, f32, compute, !capturing)) {
            return false;
        }
        add(dbias, dbias, sums, n);
        return true;
    }

    @Override
    public void matmulGeluBackward(Tensor dpre, Tensor dy, Tensor w, Tensor pre, int m, int n, int k) {
        bind();
        if (!DGELU_EPILOGUE || !geluBackwardEpilogue(dpre, dy, w, pre, m, n, k)) {
            Backend.super.matmulGeluBackward(dpre, dy, w, pre, m, n, k);
        }
    }

    /**
     * dpre[m,n] = (dy[m,k]·w[k,n]) ⊙ gelu'(pre) in one cuBLASLt product, pre the DGELU epilogue's aux input (of dpre's
     * type and layout, its leading dimension n a multiple of 8). False, having queued nothing, where the epilogue cannot
     * take these operands or cuBLASLt has no algorithm for them. bf16 only, as the GELU epilogue: the fp32 mode keeps
     * the GELU kernels as the reference.
     */
    private boolean geluBackwardEpilogue(Tensor dpre, Tensor dy, Tensor w, Tensor pre, int m, int n, int k) {
        if (m == 0 || n == 0 || k == 0 || n % 8 != 0) return false;
        DType bf = DType.BF16;
        if (dpre.dtype() != bf || dy.dtype() != bf || w.dtype() != bf || pre.dtype() != bf) return false;
        need("matmulGeluBackward", "dy", dy, (long) m * k);
        need("matmulGeluBackward", "w", w, (long) k * n);
        need("matmulGeluBackward", "dpre", dpre, (long) m * n);
        need("matmulGeluBackward", "pre", pre, (long) m * n);
        int bf16 = CublasLt.CUDA_R_16BF, compute = computeType(bf16);
        long d = dpre.data().address(), a = dy.data().address(), b = w.data().address(), aux = pre.data().address();
        CublasLt.Epilogue dgelu = CublasLt.Epilogue.DGELU;
        if (!blas.supports(dgelu, d, a, b, 0, aux, m, n, k, false, false, bf16, bf16, compute)) return false;
        return blas.matmul(d, a, b, dgelu, 0, aux, m, n, k, false, false, false, bf16, bf16, compute, !capturing);
    }

    /** The products for which cuBLASLt had no algorithm with the epilogue asked for (they ran unfused), with the reason. */
    List<String> unfusedEpilogues() {
        return blas.unsupported();
    }

    @Override
    public void addBias(Tensor out, Tensor bias, int rows, int cols) {
        bind();
        String t = act("addBias", out);
        f32("addBias", bias);
        need("addBias", "out", out, (long) rows * cols);
        need("addBias", "bias", bias, cols);
        elementwise(ELEMENTWISE, "add_bias_" + t, (long) rows * cols, out, bias, rows, cols);
    }

    @Override
    public void biasBackward(Tensor dbias, Tensor dout, int rows, int cols) {
        bind();
        String t = act("biasBackward", dout);
        f32("biasBackward", dbias);
        need("biasBackward", "dout", dout, (long) rows * cols);
        need("biasBackward", "dbias", dbias, cols);
        if (rows == 0 || cols == 0) return;
        int perPack = t.equals("bf16") ? 8 : 4;
        boolean packed = cols % perPack == 0 && aligned16(dout);
        int colBlocks = packed ? (cols / perPack + 31) / 32 : (cols + 31) / 32;
        int rowsPerBlock = biasRowsPerBlock(rows, colBlocks);
        kernels.launch(ELEMENTWISE, (packed ? "bias_backward_packed_" : "bias_backward_") + t, colBlocks, (rows + rowsPerBlock - 1) / rowsPerBlock,
                1, 32, 8, 1, 0, dbias, dout, rows, cols, rowsPerBlock);
    }

    /** Rows per block of bias_backward's grid: enough row chunks to fill the device about four times over, at least 64 rows each. */
    private int biasRowsPerBlock(int rows, int colBlocks) {
        int rowChunks = Math.max(1, Math.min((rows + 63) / 64, Math.max(1, smCount * 4 / colBlocks)));
        return (rows + rowChunks - 1) / rowChunks;
    }

    // ---- normalization

    @Override
    public void layerNormForward(Tensor out, Tensor mean, Tensor rstd, Tensor x, Tensor weight, Tensor bias,
                                 int rows, int cols, float eps) {
        bind();
        String t = act("layerNormForward", out, x);
        f32("layerNormForward", mean, rstd, weight, bias);
        need("layerNormForward", "x", x, (long) rows * cols);
        need("layerNormForward", "out", out, (long) rows * cols);
        if (rows == 0) return;
        int perPack = t.equals("bf16") ? 8 : 4, lanePacks = (cols / perPack + 31) / 32;
        if (cols % perPack == 0 && lanePacks <= 4 && aligned16(out, x, weight, bias)) { // a warp per row, the row in registers
            kernels.launch(NORMS, "layernorm_forward_packed_" + t + "_" + lanePacks, (rows + 7) / 8, 1, 1, 256, 1, 1, 0,
                    out, mean, rstd, x, weight, bias, rows, cols, eps);
            return;
        }
        if (cols <= 2048) { // a warp per row
            kernels.launch(NORMS, "layernorm_forward_warp_" + t, (rows + 7) / 8, 1, 1, 256, 1, 1, 0,
                    out, mean, rstd, x, weight, bias, rows, cols, eps);
            return;
        }
        kernels.launch(NORMS, "layernorm_forward_" + t, rows, 1, 1, rowThreads(cols), 1, 1, 0,
                out, mean, rstd, x, weight, bias, rows, cols, eps);
    }

    @Override
    public void addLayerNormForward(Tensor sum, Tensor out, Tensor mean, Tensor rstd, Tensor x, Tensor r, Tensor weight, Tensor bias,
                                    int rows, int cols, float eps) {
        bind();
        String t = act("addLayerNormForward", sum, out, x, r);
        f32("addLayerNormForward", mean, rstd, weight, bias);
        long n = (long) rows * cols;
        need("addLayerNormForward", "sum", sum, n);
        need("addLayerNormForward", "out", out, n);
        need("addLayerNormForward", "x", x, n);
        need("addLayerNormForward", "r", r, n);
        int perPack = t.equals("bf16") ? 8 : 4, lanePacks = (cols / perPack + 31) / 32;
        if (rows == 0 || cols % perPack != 0 || lanePacks > 4 || !aligned16(sum, out, x, r, weight, bias)) {
            Backend.super.addLayerNormForward(sum, out, mean, rstd, x, r, weight, bias, rows, cols, eps);
            return;
        }
        kernels.launch(NORMS, "add_layernorm_forward_packed_" + t + "_" + lanePacks, (rows + 7) / 8, 1, 1, 256, 1, 1, 0,
                sum, out, mean, rstd, x, r, weight, bias, rows, cols, eps);
    }

    /**
     * Fused where stash_norms.cu has the kernel: bf16 rows of 256·P values (P = 1..4), each quantized tensor in a
     * format of the fast quantize kernels ({@link #fastQuant}) with 3, 4 or 8 bits, both in one format. A tensor
     * whose format differs from the input's is quantized after the norm.
     */
    @Override
    public void layerNormForwardQuantized(Tensor sum, Tensor out, Tensor mean, Tensor rstd, Tensor x, Tensor r, Tensor weight,
                                          Tensor bias, int rows, int cols, float eps, Quantized xq, Quantized outq) {
        bind();
        Tensor in = r == null ? x : sum;
        QuantFormat f = xq != null ? xq.format() : outq != null ? outq.format() : null;
        Quantized fusedX = xq != null && stashNormFused(f, in, xq, cols) ? xq : null;
        Quantized fusedOut = outq != null && outq.format().equals(f) && stashNormFused(f, out, outq, cols) ? outq : null;
        if (rows == 0 || (fusedX == null && fusedOut == null) || !aligned16(x, out, weight, bias) || (r != null && !aligned16(sum, r))) {
            Backend.super.layerNormForwardQuantized(sum, out, mean, rstd, x, r, weight, bias, rows, cols, eps, xq, outq);
            return;
        }
        act("layerNormForwardQuantized", out, x);
        f32("layerNormForwardQuantized", mean, rstd, weight, bias);
        long n = (long) rows * cols;
        need("layerNormForwardQuantized", "x", x, n);
        need("layerNormForwardQuantized", "out", out, n);
        if (r != null) {
            act("layerNormForwardQuantized", sum, r);
            need("layerNormForwardQuantized", "sum", sum, n);
            need("layerNormForwardQuantized", "r", r, n);
        }
        if (fusedX != null) f.checkBuffers(fusedX.packed(), fusedX.scales(), n);
        if (fusedOut != null) f.checkBuffers(fusedOut.packed(), fusedOut.scales(), n);
        String kernel = (r == null ? "layernorm_forward_q" : "add_layernorm_forward_q") + f.bits() + "_bf16_" + cols / 256;
        kernels.launch(STASH_NORMS, kernel, (rows + 7) / 8, 1, 1, 256, 1, 1, 0, sum, out, mean, rstd, x, r, weight, bias, rows, cols, eps,
                fusedX == null ? null : fusedX.packed(), fusedX == null ? null : fusedX.scales(),
                fusedX == null ? 0 : QuantFormat.seedBits(fusedX.seed()), fusedX == null ? 0 : aligned4(fusedX.scales()),
                fusedOut == null ? null : fusedOut.packed(), fusedOut == null ? null : fusedOut.scales(),
                fusedOut == null ? 0 : QuantFormat.seedBits(fusedOut.seed()), fusedOut == null ? 0 : aligned4(fusedOut.scales()),
                Integer.numberOfTrailingZeros(f.block() / 8), f.scheme() == QuantFormat.Scheme.INT ? 1 : 0,
                f.rounding() == QuantFormat.Rounding.STOCHASTIC ? 1 : 0, quantErrors);
        quantizeCalls++;
        quantizeUnchecked = true;
        if (xq != null && fusedX == null) quantize(xq.packed(), xq.scales(), in, n, xq.format(), xq.seed());
        if (outq != null && fusedOut == null) quantize(outq.packed(), outq.scales(), out, n, outq.format(), outq.seed());
    }

    /** Whether stash_norms.cu has a kernel that quantizes t (bf16 rows of cols values) into q as it reads or writes it. */
    boolean stashNormFused(QuantFormat f, Tensor t, Quantized q, int cols) {
        int bits = f.bits();
        return stashFusion && t.dtype() == DType.BF16 && cols % 256 == 0 && cols / 256 >= 1 && cols / 256 <= 4 && (bits == 3 || bits == 4 || bits == 8)
                && fastQuant(f, t, q.packed());
    }

    @Override
    public void layerNormBackward(Tensor dx, Tensor dweight, Tensor dbias, Tensor dout, Tensor x, Tensor weight,
                                  Tensor mean, Tensor rstd, int rows, int cols) {
        bind();
        String t = act("layerNormBackward", dx, dout, x);
        f32("layerNormBackward", dweight, dbias, weight, mean, rstd);
        need("layerNormBackward", "dx", dx, (long) rows * cols);
        if (rows == 0) return;
        int perPack = t.equals("bf16") ? 8 : 4, lanePacks = (cols / perPack + 31) / 32;
        // Blocks of 16 warps (LN_BP_WARPS), each warp's dweight and dbias sums in shared memory; as many blocks an SM
        // (two at most) as those fit in, in one wave.
        int packedShared = 16 * 2 * 32 * lanePacks * perPack * 4;
        if (cols % perPack == 0 && lanePacks <= 4 && packedShared <= kernels.maxSharedOptin() && aligned16(dx, dout, x, weight)) {
            int perSm = Math.max(1, Math.min(2, (kernels.maxSharedOptin() + 1024) / (packedShared + 1024)));
            kernels.launch(NORMS, "layernorm_backward_packed_" + t + "_" + lanePacks, Math.min((rows + 15) / 16, smCount * perSm), 1, 1,
                    512, 1, 1, packedShared, dx, dweight, dbias, dout, x, weight, mean, rstd, rows, cols);
            return;
        }
        if (cols <= 4096) { // a warp per row; a block's column sums in shared memory
            kernels.launch(NORMS, "layernorm_backward_warp_" + t, Math.min((rows + 7) / 8, smCount * 8), 1, 1, 256, 1, 1,
                    2 * cols * 4, dx, dweight, dbias, dout, x, weight, mean, rstd, rows, cols);
            return;
        }
        int shared = (2 * cols + 32) * 4;
        kernels.launch(NORMS, "layernorm_backward_" + t, Math.min(rows, smCount * 2), 1, 1, rowThreads(cols), 1, 1, shared,
                dx, dweight, dbias, dout, x, weight, mean, rstd, rows, cols);
    }

    /** Where stash_norms.cu has the kernel (as for {@link #layerNormForwardQuantized}); else false. */
    @Override
    public boolean layerNormBackward(Tensor dx, Tensor dweight, Tensor dbias, Tensor dout, Quantized x, Tensor weight, Tensor mean,
                                     Tensor rstd, int rows, int cols) {
        bind();
        int packedShared = 16 * 2 * 32 * (cols / 256) * 8 * 4;
        if (rows == 0 || !stashNormFused(x.format(), dx, x, cols) || packedShared > kernels.maxSharedOptin() || !aligned16(dx, dout, weight)) {
            return false;
        }
        act("layerNormBackward", dx, dout);
        f32("layerNormBackward", dweight, dbias, weight, mean, rstd);
        need("layerNormBackward", "dx", dx, (long) rows * cols);
        need("layerNormBackward", "dout", dout, (long) rows * cols);
        QuantFormat f = x.format();
        f.checkBuffers(x.packed(), x.scales(), (long) rows * cols);
        int perSm = Math.max(1, Math.min(2, (kernels.maxSharedOptin() + 1024) / (packedShared + 4096)));
        kernels.launch(STASH_NORMS, "layernorm_backward_q" + f.bits() + "_bf16_" + cols / 256, Math.min((rows + 15) / 16, smCount * perSm),
                1, 1, 512, 1, 1, packedShared, dx, dweight, dbias, dout, weight, mean, rstd, rows, cols, x.packed(), x.scales(),
                Integer.numberOfTrailingZeros(f.block() / 8), f.scheme() == QuantFormat.Scheme.INT ? 1 : 0, aligned4(x.scales()));
        return true;
    }

    @Override
    public void rmsNormForward(Tensor out, Tensor rstd, Tensor x, Tensor weight, int rows, int cols, float eps) {
        bind();
        String t = act("rmsNormForward", out, x);
        f32("rmsNormForward", rstd, weight);
        need("rmsNormForward", "x", x, (long) rows * cols);
        if (rows == 0) return;
        kernels.launch(NORMS, "rmsnorm_forward_" + t, rows, 1, 1, rowThreads(cols), 1, 1, 0, out, rstd, x, weight, rows, cols, eps);
    }

    @Override
    public void rmsNormBackward(Tensor dx, Tensor dweight, Tensor dout, Tensor x, Tensor weight, Tensor rstd, int rows, int cols) {
        bind();
        String t = act("rmsNormBackward", dx, dout, x);
        f32("rmsNormBackward", dweight, weight, rstd);
        need("rmsNormBackward", "dx", dx, (long) rows * cols);
        if (rows == 0) return;
        int shared = (cols + 32) * 4;
        kernels.launch(NORMS, "rmsnorm_backward_" + t, Math.min(rows, smCount * 2), 1, 1, rowThreads(cols), 1, 1, shared,
                dx, dweight, dout, x, weight, rstd, rows, cols);
    }

    // ---- activations

    @Override
    public void geluForward(Tensor out, Tensor x, long n) {
        bind();
        String t = act("geluForward", out, x);
        elementwise(ELEMENTWISE, "gelu_forward_" + t, n, out, x, n, aligned16(out, x) ? 1 : 0);
    }

    /** One pass (stash_gelu.cu, the fast dequantize kernels' loop) for bf16 in their formats ({@link #fastQuant}), n a multiple of 8. */
    @Override
    public void geluRecompute(Tensor act, Tensor pre, Quantized preq, long n) {
        bind();
        QuantFormat f = preq.format();
        if (!stashFusion || n == 0 || n % 8 != 0 || act.dtype() != DType.BF16 || (pre != null && pre.dtype() != DType.BF16)
                || !aligned16(act) || !fastQuant(f, pre != null ? pre : act, preq.packed())) {
            Backend.super.geluRecompute(act, pre, preq, n);
            return;
        }
        need("geluRecompute", "act", act, n);
        if (pre != null) need("geluRecompute", "pre", pre, n);
        f.checkBuffers(preq.packed(), preq.scales(), n);
        long groups = f.blocks(n) * (f.block() / 8);
        kernels.launch(STASH_GELU, "gelu_recompute_q" + f.bits() + "_bf16", fastQuantGrid(groups), 1, 1, QUANT_FAST_THREADS, 1, 1, 0, act, pre,
                preq.packed(), preq.scales(), n, groups, Integer.numberOfTrailingZeros(f.block() / 8),
                f.scheme() == QuantFormat.Scheme.INT ? 1 : 0, aligned4(preq.scales()));
    }

    @Override
    public void geluBackward(Tensor dx, Tensor dout, Tensor x, long n) {
        bind();
        String t = act("geluBackward", dx, dout, x);
        elementwise(ELEMENTWISE, "gelu_backward_" + t, n, dx, dout, x, n, aligned16(dx, dout, x) ? 1 : 0);
    }

    /** Whether stash_gelu.cu's gelu_backward takes these: bf16, rows of a multiple of 256 values, a fast quantize format, aligned. */
    boolean geluBackwardTakes(Tensor dpre, Tensor dact, Quantized preq, int rows, int cols) {
        return rows > 0 && cols % 256 == 0 && dpre.dtype() == DType.BF16 && dact.dtype() == DType.BF16 && aligned16(dpre)
                && fastQuant(preq.format(), dact, preq.packed());
    }

    /**
     * One pass of stash_gelu.cu over bias_backward's grid for bf16 rows of a multiple of 256 values in the fast quantize
     * formats ({@link #fastQuant}), its per-block sums into a scratch vector per row chunk that a second kernel adds into
     * dbias in chunk order (no atomic adds: the bias gradient is the same from run to run); else the composed ops.
     */
    @Override
    public void geluBackwardQuantized(Tensor dpre, Tensor dbias, Tensor dact, Quantized preq, int rows, int cols) {
        bind();
        if (!stashFusion || !geluBackwardTakes(dpre, dact, preq, rows, cols)) {
            Backend.super.geluBackwardQuantized(dpre, dbias, dact, preq, rows, cols);
            return;
        }
        QuantFormat f = preq.format();
        long n = (long) rows * cols;
        need("geluBackwardQuantized", "dpre", dpre, n);
        need("geluBackwardQuantized", "dact", dact, n);
        f.checkBuffers(preq.packed(), preq.scales(), n);
        int colBlocks = cols / 256, rowsPerBlock = biasRowsPerBlock(rows, colBlocks), rowChunks = (rows + rowsPerBlock - 1) / rowsPerBlock;
        Tensor partials = null;
        if (dbias != null) {
            f32("geluBackwardQuantized", dbias);
            need("geluBackwardQuantized", "dbias", dbias, cols);
            partials = new Tensor(scratchTensor(4L * rowChunks * cols).data(), DType.F32, rowChunks * cols);
        }
        kernels.launch(STASH_GELU, "gelu_backward_q" + f.bits() + "_bf16", colBlocks, rowChunks, 1, QUANT_FAST_THREADS, 1, 1, 0,
                dpre, partials, dact, preq.packed(), preq.scales(), rows, cols, rowsPerBlock, Integer.numberOfTrailingZeros(f.block() / 8),
                f.scheme() == QuantFormat.Scheme.INT ? 1 : 0, aligned4(preq.scales()));
        if (dbias != null) elementwise(STASH_GELU, "bias_partials_add", cols, dbias, partials, rowChunks, cols);
    }

    @Override
    public void swigluForward(Tensor out, Tensor gateUp, int rows, int hidden) {
        bind();
        String t = act("swigluForward", out, gateUp);
        need("swigluForward", "gateUp", gateUp, 2L * rows * hidden);
        elementwise(ELEMENTWISE, "swiglu_forward_" + t, (long) rows * hidden, out, gateUp, rows, hidden);
    }

    @Override
    public void swigluBackward(Tensor dGateUp, Tensor dout, Tensor gateUp, int rows, int hidden) {
        bind();
        String t = act("swigluBackward", dGateUp, dout, gateUp);
        need("swigluBackward", "dGateUp", dGateUp, 2L * rows * hidden);
        elementwise(ELEMENTWISE, "swiglu_backward_" + t, (long) rows * hidden, dGateUp, dout, gateUp, rows, hidden);
    }

    // ---- attention

    @Override
    public void rope(Tensor qkv, int batch, int seq, int nHead, int nKvHead, int headDim, float theta, boolean inverse) {
        bind();
        String t = act("rope", qkv);
        need("rope", "qkv", qkv, (long) batch * seq * (nHead + 2L * nKvHead) * headDim);
        elementwise(ELEMENTWISE, "rope_" + t, (long) batch * seq * (nHead + nKvHead) * (headDim / 2),
                qkv, batch, seq, nHead, nKvHead, headDim, theta, inverse ? 1 : 0);
    }

    private static int headChunks(int headDim) {
        if (headDim <= 32) return 1;
        if (headDim <= 64) return 2;
        if (headDim <= 128) return 4;
        if (headDim <= 256) return 8;
        throw new FrugalException("attention on the CUDA backend supports headDim up to 256, got " + headDim);
    }

    private static void checkHeads(String op, int nHead, int nKvHead) {
        if (nKvHead <= 0 || nHead % nKvHead != 0) {
            throw new FrugalException(op + ": nHead " + nHead + " must be a multiple of nKvHead " + nKvHead);
        }
    }

    /** The tensor-core kernels of flash.cu serve bf16 with head dimensions 32, 64 and 128 on 16-byte aligned rows. */
    private boolean flash(String t, int headDim, Tensor... ts) {
        return t.equals("bf16") && arch >= 80 && (headDim == 32 || headDim == 64 || headDim == 128) && aligned16(ts)
                && !"0".equals(System.getenv("FRUGAL_CUDA_FLASH"));
    }

    /** FRUGAL_CUDA_FLASH_PIPE=0: flash kernels without the cp.async double buffering of key/value tiles. */
    private static final boolean FLASH_PIPE = !"0".equals(System.getenv("FRUGAL_CUDA_FLASH_PIPE"));
    /**
     * FRUGAL_CUDA_FLASH_FUSED=0: attention backward as two passes (a dq kernel, a dk/dv kernel; deterministic) instead
     * of one pass that adds dq up with fp32 atomics.
     */
    private static final boolean FLASH_FUSED = !"0".equals(System.getenv("FRUGAL_CUDA_FLASH_FUSED"));

    /**
     * FRUGAL_CUDA_FLASH_WGMMA=0: on Hopper, the forward and the one-pass backward with mma.sync instead of warpgroup MMA
     * (sm_90a, head dimension 64: tiles as 128-byte swizzled operands that the tensor cores read from shared memory).
     */
    private static final boolean FLASH_WGMMA = !"0".equals(System.getenv("FRUGAL_CUDA_FLASH_WGMMA"));

    /**
     * FRUGAL_CUDA_FLASH_WG2=0: the warpgroup-MMA kernels with one warpgroup per block (64 rows, each product waited for)
     * instead of two warpgroups sharing the streamed tiles and overlapping softmax with the tensor cores.
     */
    private static final boolean FLASH_WG2 = !"0".equals(System.getenv("FRUGAL_CUDA_FLASH_WG2"));

    /**
     * Whether the attention forward's epilogue also quantizes the stash's copy of q, k, v (else quantize reads qkv again
     * after it); FRUGAL_CUDA_STASH_QKV=0 turns that alone off, for A/B timings.
     */
    private static final boolean STASH_QKV = !"0".equals(System.getenv("FRUGAL_CUDA_STASH_QKV"));

    /** Whether attention of this head dimension runs the warpgroup-MMA kernels (Hopper, head dimension 64). */
    private boolean wgmma(int headDim) {
        return FLASH_WGMMA && arch == 90 && headDim == 64;
    }

    private static int flashShared(int headDim, int tiles, int extraFloats) {
        return tiles * 64 * (headDim + 8) * 2 + extraFloats * 4;
    }

    /** Checks attention's forward arguments; returns the activation type (act's). */
    private String checkAttentionForward(String op, Tensor out, Tensor lse, Tensor qkv, int batch, int seq, int nHead, int nKvHead,
                                         int headDim) {
        String t = act(op, out, qkv);
        f32(op, lse);
        checkHeads(op, nHead, nKvHead);
        need(op, "qkv", qkv, (long) batch * seq * (nHead + 2L * nKvHead) * headDim);
        need(op, "out", out, (long) batch * seq * nHead * headDim);
        need(op, "lse", lse, (long) batch * nHead * seq);
        return t;
    }

    /**
     * Whether the forward runs flash_forward_wg2_64 (Hopper, head dimension 64, two warpgroups), whose epilogue the fused
     * forms of attentionForwardQuantized and attentionBackwardRecomputing replace.
     */
    private boolean flashWg2(String t, int headDim, Tensor... ts) {
        return wgmma(headDim) && FLASH_WG2 && flash(t, headDim, ts);
    }

    /** Whether attentionForwardQuantized and attentionBackwardRecomputing fuse, for bf16 with this head dimension (tests). */
    boolean fusesAttentionStash(int headDim) {
        return stashFusion && activations == DType.BF16 && flashWg2("bf16", headDim) && FLASH_PIPE && FLASH_FUSED;
    }

    /** Launches a kernel of the flash_forward_wg2_64 family: two Q tiles, a ring of 4 K/V stages; args after those of its grid. */
    private void launchFlashForwardWg2(String kernel, int batch, int seq, int nHead, Object... args) {
        kernels.launch(FLASH, kernel, (seq + 127) / 128, nHead, batch, 256, 1, 1, 1024 + 10 * 64 * 64 * 2, args);
    }

    @Override
    public void attentionForward(Tensor out, Tensor lse, Tensor qkv, int batch, int seq, int nHead, int nKvHead, int headDim) {
        bind();
        String t = checkAttentionForward("attentionForward", out, lse, qkv, batch, seq, nHead, nKvHead, headDim);
        if (batch == 0 || seq == 0) return;
        float scale = (float) (1.0 / Math.sqrt(headDim));
        if (flashWg2(t, headDim, out, qkv)) {
            launchFlashForwardWg2("flash_forward_wg2_64", batch, seq, nHead, out, lse, qkv, seq, nHead, nKvHead, scale);
            return;
        }
        if (wgmma(headDim) && flash(t, headDim, out, qkv)) {
            kernels.launch(FLASH, "flash_forward_wgmma_64", (seq + 63) / 64, nHead, batch, 128, 1, 1, 1024 + 5 * 64 * 64 * 2,
                    out, lse, qkv, seq, nHead, nKvHead, scale);
            return;
        }
        if (flash(t, headDim, out, qkv)) {
            kernels.launch(FLASH, (FLASH_PIPE ? "flash_forward_pipe_" : "flash_forward_") + headDim, (seq + 63) / 64, nHead, batch,
                    128, 1, 1, flashShared(headDim, FLASH_PIPE ? 5 : 3, 0), out, lse, qkv, seq, nHead, nKvHead, scale);
            return;
        }
        int nc = headChunks(headDim);
        int dp = headDim + 1;
        int shared = (2 * 32 * dp + ATTENTION_WARPS * headDim) * 4;
        kernels.launch(ATTENTION, "attention_forward_" + t + "_" + nc, (seq + ATTENTION_WARPS - 1) / ATTENTION_WARPS, nHead, batch,
                32 * ATTENTION_WARPS, 1, 1, shared, out, lse, qkv, seq, nHead, nKvHead, headDim, scale);
    }

    /**
     * Whether the forward's epilogue (flash_forward_q<bits>_64) quantizes x, out or qkv, into q: where the forward runs
     * flash_forward_wg2_64, in a format of the fast quantize kernels ({@link #fastQuant}) with 3, 4 or 8 bits whose block
     * lies within a head's row (at most headDim values). The op takes qkv's only where STASH_QKV.
     */
    boolean fusesAttentionCopy(Tensor x, Quantized q, Tensor out, Tensor qkv, int headDim) {
        QuantFormat f = q.format();
        int bits = f.bits();
        return stashFusion && flashWg2(act("attentionForwardQuantized", out, qkv), headDim, out, qkv)
                && f.block() <= headDim && (bits == 3 || bits == 4 || bits == 8) && fastQuant(f, x, q.packed());
    }

    /**
     * Fused where the forward's epilogue quantizes ({@link #fusesAttentionCopy}): out as it writes it, q, k, v from the
     * tiles it read them into, both in one kernel where both fuse at one bit width or q, k, v at 8 bits; what does not fuse
     * is quantized after.
     */
    @Override
    public void attentionForwardQuantized(Tensor out, Quantized outq, Tensor lse, Tensor qkv, Quantized qkvq, int batch, int seq,
                                          int nHead, int nKvHead, int headDim) {
        bind();
        checkAttentionForward("attentionForwardQuantized", out, lse, qkv, batch, seq, nHead, nKvHead, headDim);
        boolean empty = batch == 0 || seq == 0;
        Quantized fusedOut = outq != null && !empty && fusesAttentionCopy(out, outq, out, qkv, headDim) ? outq : null;
        Quantized fusedQkv = qkvq != null && !empty && STASH_QKV && fusesAttentionCopy(qkv, qkvq, out, qkv, headDim)
                && (fusedOut == null || fusedOut.format().bits() == qkvq.format().bits() || qkvq.format().bits() == 8) ? qkvq : null;
        if (fusedOut == null && fusedQkv == null) {
            Backend.super.attentionForwardQuantized(out, outq, lse, qkv, qkvq, batch, seq, nHead, nKvHead, headDim);
            return;
        }
        long outN = (long) batch * seq * nHead * headDim, qkvN = (long) batch * seq * (nHead + 2L * nKvHead) * headDim;
        if (fusedOut != null) fusedOut.format().checkBuffers(fusedOut.packed(), fusedOut.scales(), outN);
        if (fusedQkv != null) fusedQkv.format().checkBuffers(fusedQkv.packed(), fusedQkv.scales(), qkvN);
        int bits = (fusedOut != null ? fusedOut : fusedQkv).format().bits();
        boolean mixed = fusedOut != null && fusedQkv != null && fusedQkv.format().bits() != bits; // q, k, v at 8 bits
        Object[] o = epilogueQuant(fusedOut), q = epilogueQuant(fusedQkv);
        launchFlashForwardWg2("flash_forward_q" + bits + (mixed ? "_qkv8" : "") + "_64", batch, seq, nHead, out, lse, qkv, seq, nHead, nKvHead,
                (float) (1.0 / Math.sqrt(headDim)), o[0], o[1], o[2], o[3], o[4], o[5], o[6], quantErrors, q[0], q[1], q[2], q[3], q[4],
                q[5], q[6]);
        quantizeCalls++;
        quantizeUnchecked = true;
        if (outq != null && fusedOut == null) quantize(outq.packed(), outq.scales(), out, outN, outq.format(), outq.seed());
        if (qkvq != null && fusedQkv == null) quantize(qkvq.packed(), qkvq.scales(), qkv, qkvN, qkvq.format(), qkvq.seed());
    }

    /** The arguments of a copy the forward's epilogue quantizes (flash.cu's StashQuant), null's a null packed pointer. */
    private Object[] epilogueQuant(Quantized q) {
        if (q == null) return new Object[]{null, null, 0, 0, 0, 0, 0};
        QuantFormat f = q.format();
        return new Object[]{q.packed(), q.scales(), Integer.numberOfTrailingZeros(f.block() / 8), f.scheme() == QuantFormat.Scheme.INT ? 1 : 0,
                f.rounding() == QuantFormat.Rounding.STOCHASTIC ? 1 : 0, QuantFormat.seedBits(q.seed()), aligned4(q.scales())};
    }

    /** Checks attention's backward arguments; returns the activation type (act's). */
    private String checkAttentionBackward(String op, Tensor dqkv, Tensor dout, Tensor out, Tensor lse, Tensor qkv, int batch, int seq,
                                          int nHead, int nKvHead, int headDim) {
        String t = act(op, dqkv, dout, out, qkv);
        f32(op, lse);
        checkHeads(op, nHead, nKvHead);
        need(op, "qkv", qkv, (long) batch * seq * (nHead + 2L * nKvHead) * headDim);
        need(op, "dqkv", dqkv, (long) batch * seq * (nHead + 2L * nKvHead) * headDim);
        need(op, "dout", dout, (long) batch * seq * nHead * headDim);
        return t;
    }

    /**
     * Whether the backward runs in one pass (dq, dk, dv together, dq added up with fp32 atomics in an accumulator in the
     * scratch after delta: {@link #backwardScratch}).
     */
    private boolean runsOnePassBackward(String t, int headDim, long rows, Tensor... ts) {
        return FLASH_PIPE && FLASH_FUSED && flash(t, headDim, ts) && deltaBytes(rows) + rows * headDim * 4 < Integer.MAX_VALUE;
    }

    /** Bytes of delta [B, H, T] (F32) in the scratch, rounded up so that what follows it is aligned. */
    private static long deltaBytes(long rows) {
        return (rows * 4 + 255) & ~255L;
    }

    /** The backward's delta [B, H, T] (F32) and, for the one-pass backward, its dq accumulator [B*T, H*D] (F32; else null). */
    private record BackwardScratch(Tensor delta, Tensor dqAcc) {
    }

    /** The backward's scratch tensors, dqAcc after delta in the scratch buffer. */
    private BackwardScratch backwardScratch(long rows, int headDim, boolean onePass) {
        long deltaBytes = deltaBytes(rows), dqAccBytes = onePass ? rows * headDim * 4 : 0;
        Tensor delta = scratchTensor(deltaBytes + dqAccBytes);
        if (!onePass) return new BackwardScratch(delta, null);
        return new BackwardScratch(delta, new Tensor(MemorySegment.ofAddress(delta.data().address() + deltaBytes).reinterpret(dqAccBytes),
                DType.F32, (int) (rows * headDim)));
    }

    /** The one-pass backward from delta and the zeroed dqAcc: dk and dv into dqkv, dq added into dqAcc, then stored into dqkv. */
    private void onePassBackward(Tensor dqkv, Tensor dqAcc, Tensor dout, Tensor lse, Tensor delta, Tensor qkv, int batch, int seq,
                                 int nHead, int nKvHead, int headDim, float scale) {
        if (wgmma(headDim) && FLASH_WG2) { // K, V, Kᵀ and two dS buffers of two tiles, 4 stages of Q, dO, lse, delta
            kernels.launch(FLASH, "flash_backward_wg2_64", (seq + 127) / 128, nKvHead, batch, 256, 1, 1,
                    1024 + 18 * 64 * 64 * 2 + 8 * 64 * 4, dqkv, dqAcc, dout, lse, delta, qkv, seq, nHead, nKvHead, scale);
        } else if (wgmma(headDim)) {
            kernels.launch(FLASH, "flash_backward_wgmma_64", (seq + 63) / 64, nKvHead, batch, 128, 1, 1,
                    1024 + 7 * 64 * 64 * 2 + 4 * 64 * 4, dqkv, dqAcc, dout, lse, delta, qkv, seq, nHead, nKvHead, scale);
        } else {
            kernels.launch(FLASH, "flash_backward_fused_" + headDim, (seq + 63) / 64, nKvHead, batch, 128, 1, 1,
                    flashShared(headDim, 6, 256) + 64 * (64 + 8) * 2, dqkv, dqAcc, dout, lse, delta, qkv, seq, nHead, nKvHead, scale);
        }
        int qWidth = nHead * headDim;
        elementwise(FLASH, "flash_dq_store", (long) batch * seq * qWidth / 8, dqkv, dqAcc, (long) batch * seq, qWidth,
                (nHead + 2 * nKvHead) * headDim, scale);
    }

    @Override
    public void attentionBackward(Tensor dqkv, Tensor dout, Tensor out, Tensor lse, Tensor qkv,
                                  int batch, int seq, int nHead, int nKvHead, int headDim) {
        bind();
        String t = checkAttentionBackward("attentionBackward", dqkv, dout, out, lse, qkv, batch, seq, nHead, nKvHead, headDim);
        if (batch == 0 || seq == 0) return;
        int nc = headChunks(headDim);
        int dp = headDim + 1;
        float scale = (float) (1.0 / Math.sqrt(headDim));
        long rows = (long) batch * seq * nHead;
        boolean onePass = runsOnePassBackward(t, headDim, rows, dqkv, dout, out, qkv);
        BackwardScratch scratch = backwardScratch(rows, headDim, onePass);
        Tensor delta = scratch.delta();
        if (onePass) {
            kernels.launch(FLASH, "flash_delta_zero_" + headDim, (int) ((rows * (headDim / 8) + 255) / 256), 1, 1, 256, 1, 1, 0,
                    delta, scratch.dqAcc(), dout, out, rows, seq, nHead);
            onePassBackward(dqkv, scratch.dqAcc(), dout, lse, delta, qkv, batch, seq, nHead, nKvHead, headDim, scale);
            return;
        }
        kernels.launch(ATTENTION, "attention_delta_" + t, (int) ((rows + ATTENTION_WARPS - 1) / ATTENTION_WARPS), 1, 1,
                32 * ATTENTION_WARPS, 1, 1, 0, delta, dout, out, batch, seq, nHead, headDim);
        if (flash(t, headDim, dqkv, dout, qkv)) {
            int tiles = (seq + 63) / 64;
            kernels.launch(FLASH, (FLASH_PIPE ? "flash_backward_dq_pipe_" : "flash_backward_dq_") + headDim, tiles, nHead, batch,
                    128, 1, 1, flashShared(headDim, FLASH_PIPE ? 6 : 4, 0), dqkv, dout, lse, delta, qkv, seq, nHead, nKvHead, scale);
            kernels.launch(FLASH, "flash_backward_dkv_" + headDim, tiles, nKvHead, batch, 128, 1, 1, flashShared(headDim, 4, 128),
                    dqkv, dout, lse, delta, qkv, seq, nHead, nKvHead, scale);
            return;
        }
        int qBlocks = (seq + ATTENTION_WARPS - 1) / ATTENTION_WARPS;
        int sharedDq = (2 * 32 * dp + 2 * ATTENTION_WARPS * headDim) * 4;
        kernels.launch(ATTENTION, "attention_backward_dq_" + t + "_" + nc, qBlocks, nHead, batch, 32 * ATTENTION_WARPS, 1, 1, sharedDq,
                dqkv, dout, lse, delta, qkv, seq, nHead, nKvHead, headDim, scale);
        int sharedDkv = (2 * 32 * dp + 2 * 32 + 2 * ATTENTION_WARPS * headDim) * 4;
        kernels.launch(ATTENTION, "attention_backward_dkv_" + t + "_" + nc, qBlocks, nKvHead, batch, 32 * ATTENTION_WARPS, 1, 1,
                sharedDkv, dqkv, dout, lse, delta, qkv, seq, nHead, nKvHead, headDim, scale);
    }

    /**
     * Fused where the forward runs flash_forward_wg2_64 and the backward in one pass: flash_forward_delta_64 recomputes
     * the forward and writes lse and, in place of out (left unwritten), delta and the zeroed dq accumulator that
     * flash_delta_zero would have made from it, with its bits; then the one-pass backward. Else the composition.
     */
    @Override
    public void attentionBackwardRecomputing(Tensor dqkv, Tensor dout, Tensor out, Tensor lse, Tensor qkv, int batch, int seq,
                                             int nHead, int nKvHead, int headDim) {
        bind();
        String t = checkAttentionBackward("attentionBackwardRecomputing", dqkv, dout, out, lse, qkv, batch, seq, nHead, nKvHead, headDim);
        long rows = (long) batch * seq * nHead;
        if (!stashFusion || batch == 0 || seq == 0 || !flashWg2(t, headDim, dout, qkv)
                || !runsOnePassBackward(t, headDim, rows, dqkv, dout, qkv)) {
            Backend.super.attentionBackwardRecomputing(dqkv, dout, out, lse, qkv, batch, seq, nHead, nKvHead, headDim);
            return;
        }
        need("attentionBackwardRecomputing", "lse", lse, rows);
        float scale = (float) (1.0 / Math.sqrt(headDim));
        BackwardScratch scratch = backwardScratch(rows, headDim, true);
        launchFlashForwardWg2("flash_forward_delta_64", batch, seq, nHead, lse, scratch.delta(), scratch.dqAcc(), dout, qkv, seq, nHead,
                nKvHead, scale);
        onePassBackward(dqkv, scratch.dqAcc(), dout, lse, scratch.delta(), qkv, batch, seq, nHead, nKvHead, headDim, scale);
    }

    // ---- embedding, residual, loss

    @Override
    public void embeddingForward(Tensor out, Tensor table, Tensor ids, int rows, int cols, boolean accumulate) {
        bind();
        String t = act("embeddingForward", out);
        f32("embeddingForward", table);
        need("embeddingForward", "out", out, (long) rows * cols);
        need("embeddingForward", "ids", ids, rows);
        elementwise(ELEMENTWISE, "embedding_forward_" + t, (long) rows * cols, out, table, ids, rows, cols,
                table.size() / Math.max(1, cols), accumulate ? 1 : 0);
    }

    @Override
    public void embeddingBackward(Tensor dtable, Tensor dout, Tensor ids, int rows, int cols) {
        bind();
        String t = act("embeddingBackward", dout);
        f32("embeddingBackward", dtable);
        need("embeddingBackward", "dout", dout, (long) rows * cols);
        elementwise(ELEMENTWISE, "embedding_backward_" + t, (long) rows * cols, dtable, dout, ids, rows, cols,
                dtable.size() / Math.max(1, cols));
    }

    @Override
    public void add(Tensor out, Tensor a, Tensor b, long n) {
        bind();
        String t = act("add", out, a, b);
        elementwise(ELEMENTWISE, "add_" + t, n, out, a, b, n, aligned16(out, a, b) ? 1 : 0);
    }

    @Override
    public void crossEntropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor targets, int rows, int vocab, float gradScale) {
        bind();
        String t = act("crossEntropy", dlogits, logits);
        f32("crossEntropy", losses);
        need("crossEntropy", "logits", logits, (long) rows * vocab);
        need("crossEntropy", "targets", targets, rows);
        if (rows == 0) return;
        if (t.equals("bf16") && vocab > 0 && vocab % 8 == 0 && aligned16(logits) && (dlogits == null || aligned16(dlogits))) {
            int packs = vocab / 8;
            for (int[] kernel : PACKED_CROSS_ENTROPY) { // {packs per thread, most threads}
                if (packs <= kernel[0] * kernel[1]) {
                    int threads = ((packs + kernel[0] - 1) / kernel[0] + 31) / 32 * 32;
                    // The widest kernel's row fills an SM's registers, so one block runs per SM: launch one per SM,
                    // each loading its next row into shared memory (a row's bytes; the static arrays take under 1 KiB)
                    // while it works on this one. The narrower kernels overlap rows by running several blocks per SM.
                    boolean staged = kernel == PACKED_CROSS_ENTROPY[PACKED_CROSS_ENTROPY.length - 1]
                            && packs * 16 + 1024 <= kernels.maxSharedOptin();
                    kernels.launch(LOSS, "cross_entropy_packed_" + kernel[0], staged ? Math.min(rows, smCount) : rows, 1, 1,
                            threads, 1, 1, staged ? packs * 16 : 0, losses, dlogits, logits, targets, rows, vocab, gradScale);
                    return;
                }
            }
        }
        kernels.launch(LOSS, "cross_entropy_" + t, rows, 1, 1, vocab >= 4096 ? 1024 : 256, 1, 1, 0,
                losses, dlogits, logits, targets, rows, vocab, gradScale);
    }

    /** loss.cu's cross_entropy_packed_P kernels: {P (16-byte packs per thread), their launch bound}. */
    private static final int[][] PACKED_CROSS_ENTROPY = {{1, 1024}, {4, 1024}, {10, 640}};

    // ---- quantization (quant.cu)

    /** quant.cu's error bits. */
    private static final int QUANT_NON_FINITE = 1, QUANT_BEYOND_BFP = 2;
    /** quant.cu's fast kernels: FAST_THREADS threads a block, FAST_CHUNKS chunks of 32 groups (of 8 values) a warp. */
    private static final int QUANT_FAST_THREADS = 256, QUANT_FAST_CHUNKS = 2;
    /**
     * Quantize and dequantize with quant.cu's general kernels only, not its fast paths: {@code FRUGAL_CUDA_QUANT_GENERAL=1}
     * (to time them, or to rule the fast paths out), or {@link #useGeneralQuantKernels} (CudaOpsBench, side by side).
     */
    private boolean generalQuantOnly = "1".equals(System.getenv("FRUGAL_CUDA_QUANT_GENERAL"));

    void useGeneralQuantKernels(boolean on) {
        generalQuantOnly = on;
    }

    /**
     * Whether kernels that produce or consume stashed tensors quantize and dequantize them themselves, and attention's
     * forward recomputed from a quantized stash writes what its backward needs in one kernel (A/B: FRUGAL_CUDA_STASH_FUSED=0).
     */
    private boolean stashFusion = !"0".equals(System.getenv("FRUGAL_CUDA_STASH_FUSED"));

    void fuseStashQuantization(boolean on) {
        stashFusion = on;
    }

    /**
     * Whether the stashed products of linear layers run as stash_gemm.cu's, quantizing in their epilogue: off unless
     * FRUGAL_CUDA_STASH_GEMM=1, since its main loop reaches about 480 TFLOP/s where cuBLASLt's reaches 640-730, which
     * costs more than the quantize pass it spares (docs/CUDA.md).
     */
    private boolean stashGemm = "1".equals(System.getenv("FRUGAL_CUDA_STASH_GEMM"));

    void useStashGemm(boolean on) {
        stashGemm = on;
    }

    /**
     * Whether quant.cu's fast kernels (BITS compiled in) take format f over these tensors: a block of 8..256 values, a
     * power of two (a block is 1..32 lanes of a warp), and the values and packed bytes 16-byte aligned.
     */
    private boolean fastQuant(QuantFormat f, Tensor values, Tensor packed) {
        return !generalQuantOnly && f.block() <= 256 && Integer.bitCount(f.block()) == 1 && aligned16(values, packed);
    }

    /** Blocks of the fast kernels' grid-stride loop over the groups of n values. */
    private int fastQuantGrid(long groups) {
        long warps = (groups + 32L * QUANT_FAST_CHUNKS - 1) / (32L * QUANT_FAST_CHUNKS);
        return (int) Math.max(1, Math.min((warps + QUANT_FAST_THREADS / 32 - 1) / (QUANT_FAST_THREADS / 32), (long) smCount * 32));
    }

    /**
     * As {@link Backend#quantize}, from F32 or BF16, with the CPU's bytes and scales bit for bit. A kernel cannot stop
     * at a block holding NaN or ±Inf (or, in BFP, a magnitude beyond the largest shared exponent), and a captured step
     * cannot be interrupted either: such a block is stored as NaN ({@link QuantFormat#NAN_BLOCK} or a NaN INT scale),
     * so that what reads it back is NaN and so is the loss, and the next {@link #synchronize} or {@link #download}
     * throws, naming the reason. That is the CPU's error, reported at the host's next wait instead of at the op.
     * Formats whose block is a power of two up to 256, over 16-byte aligned values and packed bytes, take quant.cu's
     * fast kernels (one per bit width); the rest its general ones. Both write the same bytes.
     */
    @Override
    public void quantize(Tensor packed, Tensor scales, Tensor src, long n, QuantFormat format, long seed) {
        bind();
        String t = act("quantize", src);
        need("quantize", "src", src, n);
        format.checkBuffers(packed, scales, n);
        if (n == 0) return;
        int isInt = format.scheme() == QuantFormat.Scheme.INT ? 1 : 0;
        int stochastic = format.rounding() == QuantFormat.Rounding.STOCHASTIC ? 1 : 0;
        if (fastQuant(format, src, packed)) {
            long groups = format.blocks(n) * (format.block() / 8);
            kernels.launch(QUANT, "quantize_" + t + "_q" + format.bits(), fastQuantGrid(groups), 1, 1, QUANT_FAST_THREADS, 1, 1, 0,
                    packed, scales, src, n, groups, Integer.numberOfTrailingZeros(format.block() / 8), isInt, stochastic,
                    QuantFormat.seedBits(seed), aligned4(scales), quantErrors);
        } else {
            int lanes = Integer.highestOneBit(Math.min(32, format.block() / 8)); // per block: see quant.cu
            long warps = (format.blocks(n) + 32 / lanes - 1) / (32 / lanes);
            int grid = (int) Math.min((warps + 7) / 8, (long) smCount * 32);
            kernels.launch(QUANT, "quantize_" + t, grid, 1, 1, 256, 1, 1, 0, packed, scales, src, n, format.block(),
                    format.bits(), isInt, stochastic, QuantFormat.seedBits(seed), lanes, aligned16(src) ? 1 : 0, quantErrors);
        }
        quantizeCalls++;
        quantizeUnchecked = true;
    }

    /** As {@link Backend#dequantize}, into F32 or BF16 (q·s rounded to nearest even); NaN blocks read back as NaN. */
    @Override
    public void dequantize(Tensor dst, Tensor packed, Tensor scales, long n, QuantFormat format) {
        bind();
        String t = act("dequantize", dst);
        need("dequantize", "dst", dst, n);
        format.checkBuffers(packed, scales, n);
        if (n == 0) return;
        int isInt = format.scheme() == QuantFormat.Scheme.INT ? 1 : 0;
        long groups = format.blocks(n) * (format.block() / 8);
        if (fastQuant(format, dst, packed)) {
            kernels.launch(QUANT, "dequantize_" + t + "_q" + format.bits(), fastQuantGrid(groups), 1, 1, QUANT_FAST_THREADS, 1, 1, 0,
                    dst, packed, scales, n, groups, Integer.numberOfTrailingZeros(format.block() / 8), isInt, aligned4(scales));
        } else {
            elementwise(QUANT, "dequantize_" + t, groups, dst, packed, scales, n, format.block(), format.bits(), isInt,
                    aligned16(dst) ? 1 : 0);
        }
    }

    /** 1 where t's address is a multiple of 4 (quant.cu then moves an INT scale as one word), else 0. */
    private static int aligned4(Tensor t) {
        return (t.data().address() & 3) == 0 ? 1 : 0;
    }

    /**
     * Throws if quantize kernels stored blocks as NaN since the last check (then clears the error word, so it is
     * reported once); the stream must be idle.
     */
    private void checkQuantized() {
        if (!quantizeUnchecked) return;
        quantizeUnchecked = false;
        int errors;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment word = arena.allocate(ValueLayout.JAVA_INT);
            cu.copyDtoH(word, quantErrors.data().address(), 4, stream);
            cu.streamSynchronize(stream);
            errors = word.get(ValueLayout.JAVA_INT, 0);
        }
        if (errors == 0) return;
        cu.memsetD8(quantErrors.data().address(), (byte) 0, 4, stream);
        String why = (errors & QUANT_NON_FINITE) != 0 ? "NaN or Inf" : "";
        if ((errors & QUANT_BEYOND_BFP) != 0) why += (why.isEmpty() ? "" : ", and ") + "magnitudes beyond BFP's shared-exponent range";
        throw new FrugalException("quantize on " + name() + ": blocks holding " + why + " reached a quantized stash or GEMM "
                + "operand since the host last waited (a diverged step?); they were stored, and read back, as NaN");
    }

    // ---- optimizer

    @Override
    public void sumOfSquares(Tensor out, Tensor x, long n, boolean accumulate) {
        bind();
        f32("sumOfSquares", out, x);
        int parts = (int) Math.max(1, Math.min((n + 255) / 256, (long) smCount * 8));
        Tensor partials = scratchTensor(parts * 8L);
        if (n > 0) kernels.launch(OPTIM, "sum_squares_partial_f32", parts, 1, 1, 256, 1, 1, 0, partials, x, n);
        else cu.memsetD8(partials.data().address(), (byte) 0, 8, stream);
        kernels.launch(OPTIM, "sum_squares_final_f32", 1, 1, 1, 1024, 1, 1, 0, out, partials, parts, accumulate ? 1 : 0);
    }

    @Override
    public void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, long n, float lr, float beta1, float beta2,
                      float eps, float weightDecay, int step, Tensor normSquared, float maxNorm) {
        bind();
        f32("adamw", param, grad, m, v, normSquared);
        float decay = 1f - lr * weightDecay;
        float stepSize = (float) (lr / (1 - Math.pow(beta1, step)));
        float correction2Sqrt = (float) Math.sqrt(1 - Math.pow(beta2, step));
        elementwise(OPTIM, "adamw_f32", n, param, grad, m, v, n, beta1, beta2, eps, decay, stepSize, correction2Sqrt,
                normSquared, maxNorm);
    }

    @Override
    public void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, Tensor compute, long n, Tensor hyper, float beta1,
                      float beta2, float eps, float weightDecay, Tensor normSquared, float maxNorm) {
        bind();
        f32("adamw", param, grad, m, v, hyper, normSquared);
        Tensor copy = compute == null || compute == param ? null : compute;
        if (copy != null && copy.dtype() != DType.BF16) {
            adamw(param, grad, m, v, null, n, hyper, beta1, beta2, eps, weightDecay, normSquared, maxNorm);
            convert(copy, param, n);
            return;
        }
        elementwise(OPTIM, "adamw_hyper_f32", n, param, grad, m, v, copy, n, hyper, beta1, beta2, eps, weightDecay,
                normSquared, maxNorm);
    }

    // ---- multi-tensor ops: one block per chunk of one tensor, over a chunk table built once per tensor list

    private static final long CHUNK_ELEMENTS = 1 << 16;
    /** Bytes of one entry of optim.cu's Chunk {x, n} and AdamWChunk {param, grad, m, v, compute, n, weightDecay}. */
    private static final int CHUNK_BYTES = 16, ADAMW_CHUNK_BYTES = 56;

    /** What a chunk table covers: its kind and the addresses, sizes and weight decays of its tensors, in order. */
    private record ChunkTableKey(String kind, List<Number> fields) {
    }

    private final Map<ChunkTableKey, Tensor> chunkTables = new HashMap<>();

    /**
     * The device table of {@code entryBytes}-byte chunk entries for key, built by {@code fill} (once; tables are kept,
     * as the tensor lists of a model are few and fixed); null if it is missing while a graph is being captured.
     */
    private Tensor chunkTable(ChunkTableKey key, int entryBytes, List<Tensor> ts, ChunkWriter fill) {
        Tensor table = chunkTables.get(key);
        if (table != null || capturing) return table;
        long chunks = 0;
        for (Tensor t : ts) chunks += (t.size() + CHUNK_ELEMENTS - 1) / CHUNK_ELEMENTS;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocate(Math.max(1, chunks) * entryBytes, 8);
            long entry = 0;
            for (int i = 0; i < ts.size(); i++) {
                for (long off = 0; off < ts.get(i).size(); off += CHUNK_ELEMENTS, entry++) {
                    fill.write(host.asSlice(entry * entryBytes, entryBytes), i, off, Math.min(CHUNK_ELEMENTS, ts.get(i).size() - off));
                }
            }
            table = allocate(DType.I8, (int) (Math.max(1, chunks) * entryBytes)).slice(0, (int) (chunks * entryBytes));
            if (chunks > 0) upload(table, host);
        }
        chunkTables.put(key, table);
        return table;
    }

    /** Writes the entry of tensor i's chunk of {@code n} elements at {@code offset} into {@code entry}. */
    private interface ChunkWriter {
        void write(MemorySegment entry, int i, long offset, long n);
    }

    private static ChunkTableKey chunkKey(String kind, List<Tensor> ts) {
        List<Number> fields = new ArrayList<>(2 * ts.size());
        for (Tensor t : ts) {
            fields.add(t.data().address());
            fields.add(t.size());
        }
        return new ChunkTableKey(kind, fields);
    }

    /** Chunks {x + offset, n} of F32 tensors; null if one is not F32 or while capturing a new list. */
    private Tensor f32Chunks(List<Tensor> ts) {
        for (Tensor t : ts) if (t.dtype() != DType.F32) return null;
        return chunkTable(chunkKey("f32", ts), CHUNK_BYTES, ts, (entry, i, offset, n) -> {
            entry.set(ValueLayout.JAVA_LONG, 0, ts.get(i).data().address() + 4 * offset);
            entry.set(ValueLayout.JAVA_LONG, 8, n);
        });
    }

    @Override
    public void zero(List<Tensor> ts) {
        bind();
        Tensor table = f32Chunks(ts);
        if (table == null) {
            Backend.super.zero(ts);
            return;
        }
        kernels.launch(OPTIM, "zero_chunks_f32", (int) (table.size() / CHUNK_BYTES), 1, 1, 256, 1, 1, 0, table);
    }

    @Override
    public void sumOfSquares(Tensor out, List<Tensor> xs) {
        bind();
        f32("sumOfSquares", out);
        Tensor table = f32Chunks(xs);
        if (table == null) {
            Backend.super.sumOfSquares(out, xs);
            return;
        }
        int chunks = (int) (table.size() / CHUNK_BYTES);
        Tensor partials = scratchTensor(Math.max(1, chunks) * 8L);
        kernels.launch(OPTIM, "sum_squares_chunks_f32", chunks, 1, 1, 256, 1, 1, 0, partials, table);
        kernels.launch(OPTIM, "sum_squares_final_f32", 1, 1, 1, 1024, 1, 1, 0, out, partials, chunks, 0);
    }

    @Override
    public void adamw(List<AdamWTensors> params, Tensor hyper, float beta1, float beta2, float eps, Tensor normSquared,
                      float maxNorm) {
        bind();
        f32("adamw", hyper, normSquared);
        List<Tensor> values = new ArrayList<>(params.size());
        List<Number> fields = new ArrayList<>(6 * params.size());
        for (AdamWTensors p : params) {
            f32("adamw", p.param(), p.grad(), p.m(), p.v());
            Tensor copy = p.compute() == p.param() ? null : p.compute();
            if (copy != null && copy.dtype() != DType.BF16) {
                Backend.super.adamw(params, hyper, beta1, beta2, eps, normSquared, maxNorm);
                return;
            }
            values.add(p.param());
            for (Tensor t : new Tensor[]{p.param(), p.grad(), p.m(), p.v(), copy}) fields.add(t == null ? 0L : t.data().address());
            fields.add(p.param().size());
            fields.add(p.weightDecay());
        }
        Tensor table = chunkTable(new ChunkTableKey("adamw", fields), ADAMW_CHUNK_BYTES, values, (entry, i, offset, n) -> {
            AdamWTensors p = params.get(i);
            Tensor copy = p.compute() == p.param() ? null : p.compute();
            entry.set(ValueLayout.JAVA_LONG, 0, p.param().data().address() + 4 * offset);
            entry.set(ValueLayout.JAVA_LONG, 8, p.grad().data().address() + 4 * offset);
            entry.set(ValueLayout.JAVA_LONG, 16, p.m().data().address() + 4 * offset);
            entry.set(ValueLayout.JAVA_LONG, 24, p.v().data().address() + 4 * offset);
            entry.set(ValueLayout.JAVA_LONG, 32, copy == null ? 0L : copy.data().address() + 2 * offset);
            entry.set(ValueLayout.JAVA_LONG, 40, n);
            entry.set(ValueLayout.JAVA_FLOAT, 48, p.weightDecay());
        });
        if (table == null) {
            Backend.super.adamw(params, hyper, beta1, beta2, eps, normSquared, maxNorm);
            return;
        }
        kernels.launch(OPTIM, "adamw_chunks_f32", (int) (table.size() / ADAMW_CHUNK_BYTES), 1, 1, 256, 1, 1, 0, table, hyper,
                beta1, beta2, eps, normSquared, maxNorm);
    }

    @Override
    public void close() {
        if (closed) return;
        cu.setCurrent(context);
        try {
            cu.streamSynchronize(stream);
        } finally {
            blas.close();
            kernels.close();
            for (long ptr : allocations.keySet()) cu.free(ptr);
            allocations.clear();
            if (scratchPtr != 0) cu.free(scratchPtr);
            cu.streamDestroy(stream);
            cu.primaryContextRelease(device);
            tensorMapArena.close();
            closed = true;
        }
    }
}
