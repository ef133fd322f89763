package frugal.stash;

import frugal.FrugalException;
import frugal.backend.Backend;
import frugal.nn.Workspace;
import frugal.quant.QuantFormat;
import frugal.quant.Quantized;
import frugal.tensor.DType;
import frugal.tensor.Tensor;

import java.util.HashMap;
import java.util.IdentityHashMap;
import java.util.Map;

/**
 * Every tensor a module saves in forward for its backward goes through here, by name ({@code h3.attn.qkv}) and
 * {@link StashKind kind}. The {@link StashPolicy} says per kind whether the tensor is kept (a reference to the
 * producer's buffer, no copy) or quantized into a packed buffer of its own (DSQ), dequantized again when backward
 * loads it. The same policy quantizes the GEMM operands of every linear layer ({@link #gemmOperand}, DSQ's q0–q3).
 * The {@link StashLedger} counts what all of it costs.
 *
 * <p>The producer still writes its full-precision output (F32, or BF16 under mixed precision), which is quantized
 * right after; when it is quantized under every kind it is saved as, that output lives in a buffer shared by all
 * layers ({@link #output}). A loaded tensor is dequantized into one of a few scratch buffers of its type shared by all
 * layers, valid until {@value #READ_BUFFERS} more loads; loaded again before then (attention's output, read by the
 * output projection's dW and by attention's backward), the same dequantized copy is handed out again.
 */
public final class Stash {
    private static final int READ_BUFFERS = 4;

    private final Backend ops;
    private final StashPolicy policy;
    private final long seed;
    private final StashLedger ledger = new StashLedger();
    private final Map<String, Entry> saved = new HashMap<>();
    /** Quantized entries of this forward by source buffer and format, so that a tensor saved twice is stored once. */
    private final Map<Source, Entry> bySource = new HashMap<>();
    private final Map<String, Tensor> packedBuffers = new HashMap<>();
    private final Workspace scratch;
    /**
     * Buffers shared by all layers ({@link #output}) by address, with what this pass last handed each out for: what
     * they hold is only valid until the next layer.
     */
    private final Map<Long, Declared> declared = new HashMap<>();
    /** The dequantized copy each quantized entry was last loaded into, with the count of loads when it was. */
    private final Map<Entry, Dequantized> lastLoads = new IdentityHashMap<>();
    private int step;
    private long quantizeCalls;
    private long reads;
    private long bytesSaved;
    private long bytesRead;

    private record Source(long address, long bytes, QuantFormat format) {
    }

    private record Dequantized(Tensor tensor, long index) {
    }

    /** What {@link #output} last handed out a shared buffer for: the tensor's name and the kinds it is saved under. */
    private record Declared(String name, StashKind[] kinds) {
    }

    /** A saved tensor: kept as is (packed == null), or packed in a format, to be read back as {@code dtype}. */
    private record Entry(StashKind kind, Tensor kept, Tensor packed, Tensor scales, QuantFormat format, DType dtype, int[] shape) {
        long bytes() {
            return kept != null ? kept.byteSize() : format.bytes(Tensor.count(shape));
        }
    }

    public Stash(Backend ops, StashPolicy policy, long seed) {
        this.ops = ops;
        this.policy = policy;
        this.seed = seed;
        this.scratch = new Workspace(ops);
    }

    /** A stash that keeps everything at full precision. */
    public static Stash keep(Backend ops) {
        return new Stash(ops, StashPolicy.keep(), 0);
    }

    public StashPolicy policy() {
        return policy;
    }

    public StashLedger ledger() {
        return ledger;
    }

    /** Starts a training step: the policy's stage for it, fresh rounding seeds, a fresh ledger. */
    public void beginStep(int step) {
        this.step = step;
        quantizeCalls = 0;
        policy.beginStep(step);
        ledger.reset();
    }

    public void save(String name, StashKind kind, Tensor t) {
        Quantized q = saveByProducer(name, kind, t);
        if (q == null) return;
        try {
            ops.quantize(q.packed(), q.scales(), t, t.size(), q.format(), q.seed());
        } catch (FrugalException e) {
            throw failure("stash " + name + " (" + kind.key() + ")", e);
        }
    }

    /**
     * Saves t as {@link #save} does, except that where the policy quantizes the kind, what is returned says where the
     * quantized copy goes, for t's producer to write it as it writes t (in this step, before backward). Null where there
     * is nothing to write: the kind is kept, or t was saved already in that format.
     */
    public Quantized saveByProducer(String name, StashKind kind, Tensor t) {
        QuantFormat f = kind == StashKind.TOKEN_IDS ? null : policy.format(kind);
        long bf16 = t.dtype() == DType.F32 && kind != StashKind.SOFTMAX_STATS && kind != StashKind.NORM_STATS ? 2 * t.size() : t.byteSize();
        if (f == null) {
            if (declared.containsKey(t.data().address())) {
                throw new IllegalStateException("stash " + name + ": " + kind.key() + " is kept, but the tensor is in a buffer shared by all"
                        + " layers (give Stash.output every kind the tensor is saved under)");
            }
            saved.put(name, new Entry(kind, t, null, null, null, t.dtype(), t.shape()));
            boolean shared = bySource.containsKey(new Source(t.data().address(), t.byteSize(), null));
            if (!shared) {
                bySource.put(new Source(t.data().address(), t.byteSize(), null), saved.get(name));
                ledger.stashed(kind, t.byteSize(), bf16);
            }
            bytesSaved += t.byteSize();
            return null;
        }
        if (t.dtype() != DType.F32 && t.dtype() != DType.BF16) {
            throw new FrugalException("stash " + name + ": only F32 and BF16 tensors can be quantized, got " + t);
        }
        Source source = new Source(t.data().address(), t.byteSize(), f);
        Entry same = bySource.get(source);
        if (same != null) { // e.g. attention's output is also the output projection's input
            saved.put(name, same);
            return null;
        }
        long n = t.size();
        Tensor buffer = packedBuffers.get(name);
        long capacity = policy.maxQuantizedBytes(kind, n);
        if (buffer == null || buffer.byteSize() < capacity) {
            buffer = ops.allocate(DType.I8, Math.toIntExact(capacity));
            packedBuffers.put(name, buffer);
        }
        Tensor packed = buffer.slice(0, Math.toIntExact(f.packedBytes(n)));
        Tensor scales = buffer.slice(f.packedBytes(n), Math.toIntExact(f.scalesBytes(n)));
        Entry e = new Entry(kind, null, packed, scales, f, t.dtype(), t.shape());
        saved.put(name, e);
        bySource.put(source, e);
        ledger.stashed(kind, e.bytes(), bf16);
        bytesSaved += e.bytes();
        return new Quantized(packed, scales, f, nextSeed());
    }

    /**
     * Where the producer of t, a buffer from {@link #output}, writes t's quantized copy as it writes t: for the kinds
     * output was given, when they are all quantized in one format (else null, and t is saved as usual by those who read
     * it). Their saves of t then find it saved.
     */
    public Quantized outputByProducer(Tensor t) {
        Declared d = declared.get(t.data().address());
        if (d == null) return null;
        QuantFormat f = policy.format(d.kinds()[0]);
        for (StashKind k : d.kinds()) if (!f.equals(policy.format(k))) return null;
        return saveByProducer(d.name(), d.kinds()[0], t);
    }

    /**
     * The buffer forward writes a tensor into that it then saves under {@code kinds}. While the policy keeps any of
     * them, backward reads the buffer itself, so each tensor needs its own ({@code name} in {@code buffers}). Once
     * every kind is quantized, only the packed copy outlives the layer: the tensor goes into one buffer shared by all
     * layers ({@code sharedRole}, e.g. {@code mlp.fc}), so the full-precision activations of a step are not held at
     * once and a quantized stash lowers the memory, not just the count of it. Ask for it right before writing it: what
     * was saved from the shared buffer's previous content is forgotten here (the packed copies stay).
     */
    public Tensor output(Workspace buffers, String name, String sharedRole, int[] shape, StashKind... kinds) {
        for (StashKind k : kinds) if (policy.format(k) == null) return buffers.get(name, shape);
        Tensor t = buffers.get("shared." + sharedRole, shape);
        long address = t.data().address();
        declared.put(address, new Declared(name, kinds));
        bySource.keySet().removeIf(s -> s.address() == address); // what was saved from it came from another layer
        return t;
    }

    public Tensor load(String name) {
        Entry e = entry(name);
        Dequantized last = lastLoads.get(e);
        if (last != null && reads - last.index() <= READ_BUFFERS) return last.tensor(); // its buffer not handed out since
        read(name);
        if (e.kept != null) return e.kept;
        Tensor out = scratch.get("read." + e.dtype + "." + (reads % READ_BUFFERS), e.dtype, e.shape);
        lastLoads.put(e, new Dequantized(out, reads++));
        ops.dequantize(out, e.packed, e.scales, out.size(), e.format);
        return out;
    }

    /** The quantized copy saved under name, for a consumer that reads it as it is ({@link #readByConsumer}); null when kept. */
    public Quantized quantized(String name) {
        Entry e = entry(name);
        return e.kept != null ? null : new Quantized(e.packed, e.scales, e.format, 0);
    }

    /** Counts the read of the tensor saved under name by a consumer that read its {@link #quantized} copy itself. */
    public void readByConsumer(String name) {
        read(name);
    }

    private Entry read(String name) {
        Entry e = entry(name);
        ledger.readBack(e.kind, e.bytes());
        bytesRead += e.bytes();
        return e;
    }

    private Entry entry(String name) {
        Entry e = saved.get(name);
        if (e == null) throw new IllegalStateException("nothing stashed under " + name + " (backward without forward?)");
        return e;
    }

    /** e with the step and what was being quantized in front of its message. */
    public FrugalException failure(String what, FrugalException e) {
        return new FrugalException("step " + step + ", " + what + ": " + e.getMessage(), e);
    }

    /**
     * A GEMM operand as quantization point {@code point} sees it: t itself when the point keeps full precision,
     * otherwise t quantized and dequantized into a scratch buffer of its {@code role} and type (at most one live operand
     * per role), which stands for a GEMM reading low-bit operands (there is no low-bit GEMM yet).
     */
    public Tensor gemmOperand(QuantPoint point, String role, Tensor t) {
        QuantFormat f = policy.format(point);
        if (point == QuantPoint.Q2) ledger.gradient(f == null ? 2 * t.size() : f.bytes(t.size()), t.size());
        if (f == null) return t;
        long n = t.size();
        Tensor packed = scratch.get("gemm.packed." + role, DType.I8, Math.toIntExact(f.bytes(n)));
        Tensor p = packed.slice(0, Math.toIntExact(f.packedBytes(n))), s = packed.slice(f.packedBytes(n), Math.toIntExact(f.scalesBytes(n)));
        Tensor out = scratch.get("gemm." + role + "." + t.dtype(), t.dtype(), t.shape());
        try {
            ops.quantize(p, s, t, n, f, nextSeed());
        } catch (FrugalException e) {
            throw failure(point.key() + " operand (" + role + ")", e);
        }
        ops.dequantize(out, p, s, n, f);
        return out;
    }

    /** Bits per value of what point p hands a GEMM: its format's, scales included, or 16 for full precision. */
    public double bits(QuantPoint point) {
        QuantFormat f = policy.format(point);
        return f == null ? 16 : f.bitsPerValue();
    }

    /** Bits per value of the stashed tensor saved under name (16 when kept). */
    public double bits(String name) {
        Entry e = saved.get(name);
        if (e == null) throw new IllegalStateException("nothing stashed under " + name);
        return e.format == null ? 16 : e.format.bitsPerValue();
    }

    private long nextSeed() {
        return seed * 0x9E3779B97F4A7C15L + ((long) step << 32) + quantizeCalls++;
    }

    /** Forgets everything saved (after backward, or after a forward that needs no backward). */
    public void clear() {
        saved.clear();
        bySource.clear();
        declared.clear();
        lastLoads.clear();
        ledger.released();
        reads = 0; // every pass hands out the same read buffers in the same order: a captured graph allocates nothing
    }

    public long bytesSaved() {
        return bytesSaved;
    }

    public long bytesRead() {
        return bytesRead;
    }

    /** Bytes held right now: the activation memory backward will need (a tensor saved twice counted once). */
    public long bytesHeld() {
        return bySource.values().stream().mapToLong(Entry::bytes).sum();
    }
}
