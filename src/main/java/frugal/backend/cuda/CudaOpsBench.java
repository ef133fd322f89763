package frugal.backend.cuda;

import frugal.quant.QuantFormat;
import frugal.quant.Quantized;
import frugal.tensor.DType;
import frugal.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

/**
 * Times each CUDA op at GPT-2 small training shapes (B=8, T=1024, C=768, 12 heads, V=50257, 124M parameters) and
 * prints one line per op: milliseconds (median of 5 batches of 20 calls, one synchronization per batch) and the
 * rate that bounds it (TFLOP/s for matrix products and attention, GB/s of compulsory traffic otherwise).
 * A program, not a test: {@code java --enable-native-access=ALL-UNNAMED -cp frugal.jar frugal.backend.cuda.CudaOpsBench}.
 * bench/cuda/torch_ops.py times the same ops through PyTorch for comparison.
 */
public final class CudaOpsBench {
    private final CudaBackend gpu;
    private final Random rng = new Random(1);
    private final List<String> lines = new ArrayList<>();

    private CudaOpsBench(CudaBackend gpu) {
        this.gpu = gpu;
    }

    private Tensor random(int... shape) {
        Tensor t = gpu.allocate(DType.F32, shape);
        float[] data = new float[(int) Math.min(Tensor.count(shape), 1 << 24)];
        for (int i = 0; i < data.length; i++) data[i] = (float) rng.nextGaussian();
        // fill in chunks of at most 16M elements (random, never zeros)
        for (long off = 0; off < t.size(); off += data.length) {
            int n = (int) Math.min(data.length, t.size() - off);
            gpu.upload(t.slice(off, n), MemorySegment.ofArray(data));
        }
        return t;
    }

    private void time(String name, double flops, double bytes, Runnable op) {
        for (int i = 0; i < 3; i++) op.run();
        gpu.synchronize();
        int reps = 20;
        double[] ms = new double[5];
        for (int b = 0; b < ms.length; b++) {
            long t0 = System.nanoTime();
            for (int i = 0; i < reps; i++) op.run();
            gpu.synchronize();
            ms[b] = (System.nanoTime() - t0) / 1e6 / reps;
        }
        Arrays.sort(ms);
        double t = ms[ms.length / 2];
        String rate = flops > 0 ? String.format("%8.1f TFLOP/s", flops / t / 1e9) : String.format("%8.0f GB/s   ", bytes / t / 1e6);
        String line = String.format("%-56s %9.3f ms  %s", name, t, rate);
        lines.add(line);
        System.out.println(line);
    }

    private void run() {
        int B = 8, T = 1024, C = 768, NH = 12, HD = 64, V = 50257, rows = B * T;
        long params = 124_439_808L;
        Tensor x = random(rows, C), w = random(C, 3 * C), qkv = random(rows, 3 * C);
        time("matmul fwd 8192x2304x768", 2.0 * rows * 3 * C * C, 0, () -> gpu.matmul(qkv, x, w, rows, 3 * C, C, false, false, false));
        Tensor dqkv = random(rows, 3 * C), dw = random(C, 3 * C), dx = random(rows, C);
        time("matmul dW 768x2304x8192 (tA, acc)", 2.0 * rows * 3 * C * C, 0,
                () -> gpu.matmul(dw, x, dqkv, C, 3 * C, rows, true, false, true));
        time("matmul dX 8192x768x2304 (tB)", 2.0 * rows * 3 * C * C, 0,
                () -> gpu.matmul(dx, dqkv, w, rows, C, 3 * C, false, true, false));
        Tensor wte = random(V, C), logits = random(rows, V);
        time("matmul lm head 8192x50257x768 (tB)", 2.0 * rows * V * C, 0,
                () -> gpu.matmul(logits, x, wte, rows, V, C, false, true, false));

        Tensor out = random(rows, C), lse = random(B, NH, T), dout = random(rows, C);
        double attnFlops = 4.0 * B * NH * T * (T + 1) / 2.0 * HD;
        time("attentionForward B8 T1024 H12 D64", attnFlops, 0, () -> gpu.attentionForward(out, lse, qkv, B, T, NH, NH, HD));
        time("attentionBackward B8 T1024 H12 D64", 2.5 * attnFlops, 0,
                () -> gpu.attentionBackward(dqkv, dout, out, lse, qkv, B, T, NH, NH, HD));

        Tensor lnw = random(C), lnb = random(C), mean = random(rows), rstd = random(rows), dlnw = random(C), dlnb = random(C);
        time("layerNormForward 8192x768", 0, 2.0 * rows * C * 4, () -> gpu.layerNormForward(out, mean, rstd, x, lnw, lnb, rows, C, 1e-5f));
        gpu.layerNormForward(out, mean, rstd, x, lnw, lnb, rows, C, 1e-5f);
        time("layerNormBackward 8192x768", 0, 4.0 * rows * C * 4,
                () -> gpu.layerNormBackward(dx, dlnw, dlnb, dout, x, lnw, mean, rstd, rows, C));
        time("rmsNormForward 8192x768", 0, 2.0 * rows * C * 4, () -> gpu.rmsNormForward(out, rstd, x, lnw, rows, C, 1e-5f));

        Tensor h = random(rows, 4 * C), gh = random(rows, 4 * C);
        long nh = (long) rows * 4 * C;
        time("geluForward 8192x3072", 0, 2.0 * nh * 4, () -> gpu.geluForward(gh, h, nh));
        time("geluBackward 8192x3072 (in place)", 0, 3.0 * nh * 4, () -> gpu.geluBackward(gh, gh, h, nh));
        time("add 8192x768", 0, 3.0 * rows * C * 4, () -> gpu.add(out, x, dout, (long) rows * C));
        time("addBias 8192x2304", 0, 2.0 * rows * 3 * C * 4, () -> gpu.addBias(qkv, dw.slice(0, 3 * C), rows, 3 * C));
        time("biasBackward 8192x2304", 0, 1.0 * rows * 3 * C * 4, () -> gpu.biasBackward(dw.slice(0, 3 * C), dqkv, rows, 3 * C));
        time("rope B8 T1024 H12 D64", 0, 2.0 * rows * 2 * C * 4, () -> gpu.rope(qkv, B, T, NH, NH, HD, 10000f, false));

        Tensor ids = gpu.allocate(DType.I32, rows);
        int[] idData = new int[rows];
        for (int i = 0; i < rows; i++) idData[i] = rng.nextInt(V);
        gpu.upload(ids, MemorySegment.ofArray(idData));
        time("embeddingForward 8192x768", 0, 2.0 * rows * C * 4, () -> gpu.embeddingForward(out, wte, ids, rows, C, false));
        time("embeddingBackward 8192x768", 0, 3.0 * rows * C * 4, () -> gpu.embeddingBackward(wte, dout, ids, rows, C));
        Tensor losses = random(rows);
        Tensor logitsCopy = random(rows, V);
        time("crossEntropy 8192x50257 (loss only)", 0, 1.0 * rows * V * 4,
                () -> gpu.crossEntropy(losses, null, logitsCopy, ids, rows, V, 1f / rows));
        time("crossEntropy 8192x50257 (+dlogits)", 0, 3.0 * rows * V * 4,
                () -> gpu.crossEntropy(losses, logits, logitsCopy, ids, rows, V, 1f / rows));
        gpu.release(logits);
        gpu.release(logitsCopy);

        Tensor p = random((int) params), g = random((int) params), m = random((int) params), v = random((int) params);
        Tensor norm = random(1);
        gpu.zero(v);
        time("sumOfSquares 124M", 0, params * 4.0, () -> gpu.sumOfSquares(norm, g, params, false));
        time("adamw 124M (clip)", 0, params * 4.0 * 7, () -> gpu.adamw(p, g, m, v, params, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 10, norm, 1f));

        System.out.println("---- " + gpu.name() + ", tf32 " + gpu.tf32());
        for (String line : lines) System.out.println(line);
    }

    /** A bf16 tensor of random values. */
    private Tensor randomBf16(int... shape) {
        Tensor f = random(shape), h = gpu.allocate(DType.BF16, shape);
        gpu.convert(h, f, f.size());
        gpu.release(f);
        return h;
    }

    /**
     * The bf16 matrix products of a GPT-2 124M step at batch 16 × 1024 (rows = 16384), each layout as the model
     * issues it, plus the forward as NN (weight stored transposed) for comparison.
     */
    private void gemms() {
        int rows = 16 * 1024, C = 768, V = 50304;
        Tensor x = randomBf16(rows, 4 * C), dy = randomBf16(rows, 4 * C), y = randomBf16(rows, 4 * C), dx = randomBf16(rows, 4 * C);
        Tensor w = randomBf16(4 * C, 4 * C), dw = random(4 * C, 4 * C), bias = random(4 * C), pre = randomBf16(rows, 4 * C);
        for (int[] layer : new int[][]{{3 * C, C}, {C, C}, {4 * C, C}, {C, 4 * C}}) {
            int out = layer[0], in = layer[1];
            String shape = rows + "x" + out + "x" + in;
            double flops = 2.0 * rows * out * in;
            time("fwd NT + bias epilogue " + shape, flops, 0, () -> gpu.linearForward(y, x, w, bias, rows, out, in));
            time("fwd NT " + shape, flops, 0, () -> gpu.matmul(y, x, w, rows, out, in, false, true, false));
            time("fwd NT, then addBias " + shape, flops, 0, () -> {
                gpu.matmul(y, x, w, rows, out, in, false, true, false);
                gpu.addBias(y, bias, rows, out);
            });
            time("fwd NN (weight transposed) " + shape, flops, 0, () -> gpu.matmul(y, x, w, rows, out, in, false, false, false));
            if (out == 4 * C) { // the fc layer: GELU in the product's epilogue, or after it
                time("fwd NT + bias + GELU epilogue " + shape, flops, 0,
                        () -> gpu.linearGeluForward(y, pre, x, w, bias, rows, out, in));
                time("fwd NT + bias epilogue, then GELU " + shape, flops, 0, () -> {
                    gpu.linearForward(pre, x, w, bias, rows, out, in);
                    gpu.geluForward(y, pre, (long) rows * out);
                });
            }
            time("dX NN " + rows + "x" + in + "x" + out, flops, 0, () -> gpu.matmul(dx, dy, w, rows, in, out, false, false, false));
            if (in == 4 * C) { // the proj layer: GELU's backward in its dX product's epilogue, or after it
                time("dX NN + GELU backward epilogue " + rows + "x" + in + "x" + out, flops, 0,
                        () -> gpu.matmulGeluBackward(dx, dy, w, pre, rows, in, out));
                time("dX NN, then GELU backward " + rows + "x" + in + "x" + out, flops, 0, () -> {
                    gpu.matmul(dx, dy, w, rows, in, out, false, false, false);
                    gpu.geluBackward(dx, dx, pre, (long) rows * in);
                });
            }
            time("dW TN f32 acc " + out + "x" + in + "x" + rows, flops, 0, () -> gpu.matmul(dw, dy, x, out, in, rows, true, false, true));
            time("biasBackward " + rows + "x" + out, 0, 2.0 * rows * out, () -> gpu.biasBackward(bias, dy, rows, out));
            time("dW TN f32 acc + bias gradient epilogue " + out + "x" + in + "x" + rows, flops, 0,
                    () -> gpu.linearWeightBackward(dw, bias, dy, x, rows, out, in));
        }
        Tensor wte = randomBf16(V, C), logits = randomBf16(rows, V), dwte = random(V, C);
        double flops = 2.0 * rows * V * C;
        time("lm head fwd NT " + rows + "x" + V + "x" + C, flops, 0, () -> gpu.matmul(logits, x, wte, rows, V, C, false, true, false));
        time("lm head dX NN " + rows + "x" + C + "x" + V, flops, 0, () -> gpu.matmul(dx, logits, wte, rows, C, V, false, false, false));
        time("lm head dW TN f32 acc " + V + "x" + C + "x" + rows, flops, 0,
                () -> gpu.matmul(dwte, logits, x, V, C, rows, true, false, true));
        System.out.println("---- " + gpu.name() + ", bf16 GEMMs, FRUGAL_CUDA_GEMM_CANDIDATES=" + CublasLt.TUNE_CANDIDATES);
        for (String line : lines) System.out.println(line);
    }

    /** bf16 flash attention forward and backward at GPT-2 124M's shape, batch 16 × 1024 (kernel variants by environment). */
    private void attention() {
        int B = 16, T = 1024, NH = 12, HD = 64, rows = B * T, C = NH * HD;
        Tensor qkv = randomBf16(rows, 3 * C), out = randomBf16(rows, C), dout = randomBf16(rows, C), dqkv = randomBf16(rows, 3 * C);
        Tensor lse = gpu.allocate(DType.F32, B, NH, T);
        double flops = 4.0 * B * NH * T * (T + 1) / 2.0 * HD;
        time("attentionForward B16 T1024 H12 D64", flops, 0, () -> gpu.attentionForward(out, lse, qkv, B, T, NH, NH, HD));
        time("attentionBackward B16 T1024 H12 D64", 2.5 * flops, 0,
                () -> gpu.attentionBackward(dqkv, dout, out, lse, qkv, B, T, NH, NH, HD));
        System.out.println("---- " + gpu.name() + ", bf16 attention");
        for (String line : lines) System.out.println(line);
    }

    /**
     * quantize and dequantize of bf16 activations at GPT-2 124M's shapes, batch 16 × 1024 (the MLP's 16384 × 3072 and
     * the residual's 16384 × 768), in DSQ's formats and int4: each by quant.cu's fast kernel and by its general one, as
     * GB/s of bytes read and written, after checking on these tensors that both write the same bytes and values.
     */
    private void quant() {
        int rows = 16 * 1024;
        List<QuantFormat> formats = new ArrayList<>();
        for (String name : new String[]{"bfp3", "bfp4", "bfp8", "int4"}) {
            for (String rounding : new String[]{"rn", "sr"}) formats.add(QuantFormat.parse(name + "/32/" + rounding));
        }
        for (int cols : new int[]{4 * 768, 768}) {
            Tensor x = randomBf16(rows, cols), y = gpu.allocate(DType.BF16, rows, cols), yGeneral = gpu.allocate(DType.BF16, rows, cols);
            long n = x.size();
            int capacity = (int) formats.stream().mapToLong(f -> f.bytes(n)).max().orElseThrow();
            Tensor fast = gpu.allocate(DType.I8, capacity), general = gpu.allocate(DType.I8, capacity);
            for (QuantFormat f : formats) {
                Tensor p = fast.slice(0, (int) f.packedBytes(n)), s = fast.slice(f.packedBytes(n), (int) f.scalesBytes(n));
                Tensor gp = general.slice(0, (int) f.packedBytes(n)), gs = general.slice(f.packedBytes(n), (int) f.scalesBytes(n));
                gpu.quantize(p, s, x, n, f, 7);
                gpu.dequantize(y, p, s, n, f);
                gpu.useGeneralQuantKernels(true);
                gpu.quantize(gp, gs, x, n, f, 7);
                gpu.dequantize(yGeneral, gp, gs, n, f);
                String shape = " " + rows + "x" + cols;
                String check = "fast = general" + shape + " " + f + ": " + (sameBytes(fast.slice(0, (int) f.bytes(n)), general.slice(0, (int) f.bytes(n)))
                        ? "same bytes" : "BYTES DIFFER") + ", " + (sameBytes(y, yGeneral) ? "same values" : "VALUES DIFFER");
                lines.add(check);
                System.out.println(check);
                double bytes = 2.0 * n + f.bytes(n);
                for (boolean generalOnly : new boolean[]{false, true}) {
                    gpu.useGeneralQuantKernels(generalOnly);
                    String kernel = generalOnly ? " general" : " fast";
                    time("quantize " + f + shape + kernel, 0, bytes, () -> gpu.quantize(p, s, x, n, f, 7));
                    time("dequantize " + f + shape + kernel, 0, bytes, () -> gpu.dequantize(y, p, s, n, f));
                }
                gpu.useGeneralQuantKernels(false);
            }
            for (Tensor t : new Tensor[]{x, y, yGeneral, fast, general}) gpu.release(t);
        }
        System.out.println("---- " + gpu.name() + ", quantize/dequantize of bf16 (GB/s: bytes read + written)");
        for (String line : lines) System.out.println(line);
    }

    /**
     * The stashed products of GPT-2 124M at batch 16 × 1024 under a quantized stash: fc (GELU; its input stashed) and
     * the q/k/v projection (and the MLP's projection, 4× deeper, as a probe of the products without their epilogue), each as stash_gemm.cu's one product against cuBLASLt's followed by quant.cu's quantize, and
     * cuBLASLt's product alone (what keeping the stash costs).
     */
    private void stashGemms() {
        int rows = 16 * 1024, C = 768;
        Tensor x = randomBf16(rows, 4 * C), y = randomBf16(rows, 4 * C), pre = randomBf16(rows, 4 * C);
        Tensor w = randomBf16(4 * C, 4 * C), bias = randomBf16(4 * C);
        // fc, qkv, and a product of 4× the depth (the MLP's projection, not stashed): its epilogue weighs 4× less
        int[][] layers = {{4 * C, C}, {3 * C, C}, {C, 4 * C}};
        for (String name : new String[]{"bfp4/32/rn", "bfp3/32/rn", "bfp4/32/sr"}) {
            QuantFormat f = QuantFormat.parse(name);
            for (int[] layer : layers) {
                int out = layer[0], in = layer[1];
                boolean gelu = out == 4 * C;
                long n = (long) rows * out;
                Quantized q = new Quantized(gpu.allocate(DType.I8, (int) f.packedBytes(n)), gpu.allocate(DType.I8, (int) f.scalesBytes(n)), f, 7);
                String shape = (gelu ? " fc+GELU " : in == C ? " qkv " : " proj ") + rows + "x" + out + "x" + in + " " + f;
                double flops = 2.0 * rows * out * in;
                Runnable op = gelu ? () -> gpu.linearGeluForwardQuantized(y, pre, q, x, w, bias, rows, out, in)
                        : () -> gpu.linearForwardQuantized(y, q, x, w, bias, rows, out, in);
                gpu.useStashGemm(false);
                time("cuBLASLt product alone" + shape, flops, 0, gelu ? () -> gpu.linearGeluForward(y, pre, x, w, bias, rows, out, in)
                        : () -> gpu.linearForward(y, x, w, bias, rows, out, in));
                time("cuBLASLt, then quantize" + shape, flops, 0, op);
                gpu.useStashGemm(true);
                time("stash_gemm.cu" + shape, flops, 0, op);
                gpu.useStashGemm(false);
                gpu.release(q.packed());
                gpu.release(q.scales());
            }
        }
        System.out.println("---- " + gpu.name() + ", stashed products (TFLOP/s of the product, quantization included)");
        for (String line : lines) System.out.println(line);
    }

    /**
     * GELU's path in GPT-2 124M's MLP at batch 16 × 1024 (16384 × 3072 × 768) under a stash that keeps the pre-activation
     * quantized, as it was (cuBLASLt's GELU and DGELU epilogues, the pre-activation dequantized, bias backward) and as
     * it is (the bias product, then stash_gelu.cu's kernels), each whole and kernel by kernel (GB/s of bytes read and
     * written by the passes over activations).
     */
    private void stashGelu() {
        int rows = 16 * 1024, C = 768, H = 4 * C;
        long n = (long) rows * H;
        Tensor x = randomBf16(rows, C), w = randomBf16(H, C), bias = randomBf16(H), wProj = randomBf16(C, H), dy = randomBf16(rows, C);
        Tensor pre = randomBf16(rows, H), act = randomBf16(rows, H), dact = randomBf16(rows, H), dpre = randomBf16(rows, H);
        Tensor db = gpu.allocate(DType.F32, H);
        double fc = 2.0 * rows * H * C;
        for (String name : new String[]{"bfp3/32/rn", "bfp4/32/rn"}) {
            QuantFormat f = QuantFormat.parse(name);
            Quantized q = new Quantized(gpu.allocate(DType.I8, (int) f.packedBytes(n)), gpu.allocate(DType.I8, (int) f.scalesBytes(n)), f, 7);
            String shape = " " + rows + "x" + H + " " + f;
            time("fwd: GELU epilogue, then quantize" + shape, fc, 0, () -> {
                gpu.linearGeluForward(act, pre, x, w, bias, rows, H, C);
                gpu.quantize(q.packed(), q.scales(), pre, n, f, 7);
            });
            time("fwd: bias product, then gelu_quantize" + shape, fc, 0, () -> {
                gpu.linearForward(pre, x, w, bias, rows, H, C);
                gpu.geluQuantize(act, pre, q, n);
            });
            time("  gelu_quantize" + shape, 0, 4.0 * n + f.bytes(n), () -> gpu.geluQuantize(act, pre, q, n));
            time("bwd: recompute act+pre, DGELU epilogue, bias backward" + shape, fc, 0, () -> {
                gpu.geluRecompute(act, pre, q, n);
                gpu.matmulGeluBackward(dpre, dy, wProj, pre, rows, H, C);
                gpu.biasBackward(db, dpre, rows, H);
            });
            time("bwd: recompute act, plain dX, gelu_backward" + shape, fc, 0, () -> {
                gpu.geluRecompute(act, null, q, n);
                gpu.matmul(dact, dy, wProj, rows, H, C, false, false, false);
                gpu.geluBackwardQuantized(dpre, db, dact, q, rows, H);
            });
            time("  gelu_recompute, act only" + shape, 0, 2.0 * n + f.bytes(n), () -> gpu.geluRecompute(act, null, q, n));
            time("  gelu_backward + bias" + shape, 0, 4.0 * n + f.bytes(n), () -> gpu.geluBackwardQuantized(dpre, db, dact, q, rows, H));
            gpu.fuseStashQuantization(false);
            time("  dequantize, gelu backward, bias backward" + shape, 0, 4.0 * n + f.bytes(n),
                    () -> gpu.geluBackwardQuantized(dpre, db, dact, q, rows, H));
            gpu.fuseStashQuantization(true);
            gpu.release(q.packed());
            gpu.release(q.scales());
        }
        System.out.println("---- " + gpu.name() + ", GELU under a quantized stash (TFLOP/s of fc's product; GB/s of the passes)");
        for (String line : lines) System.out.println(line);
    }

    /** Whether a and b hold the same bytes. */
    private boolean sameBytes(Tensor a, Tensor b) {
        byte[] ha = new byte[Math.toIntExact(a.byteSize())], hb = new byte[Math.toIntExact(b.byteSize())];
        gpu.download(a, MemorySegment.ofArray(ha));
        gpu.download(b, MemorySegment.ofArray(hb));
        return Arrays.equals(ha, hb);
    }

    /**
     * {@code [--tf32]}: the fp32 op table; {@code --gemm}: the bf16 matrix products of GPT-2 124M at batch 16;
     * {@code --attention}: its bf16 attention; {@code --quant}: quantize and dequantize at its shapes (fast paths against
     * the general kernels); {@code --stash-gemm}: stash_gemm.cu's products against cuBLASLt's and quantize;
     * {@code --stash-gelu}: GELU's path under a quantized stash, before and after stash_gelu.cu's forward and backward.
     */
    public static void main(String[] args) {
        if (!CudaBackend.isAvailable()) {
            System.err.println("no CUDA: " + CudaBackend.unavailableReason());
            System.exit(1);
        }
        String mode = args.length > 0 ? args[0] : "";
        boolean bf16 = mode.equals("--gemm") || mode.equals("--attention") || mode.equals("--quant") || mode.equals("--stash-gemm")
                || mode.equals("--stash-gelu");
        try (CudaBackend gpu = new CudaBackend(0, mode.equals("--tf32"), bf16 ? DType.BF16 : DType.F32)) {
            CudaOpsBench bench = new CudaOpsBench(gpu);
            switch (mode) {
                case "--gemm" -> bench.gemms();
                case "--attention" -> bench.attention();
                case "--quant" -> bench.quant();
                case "--stash-gemm" -> bench.stashGemms();
                case "--stash-gelu" -> bench.stashGelu();
                default -> bench.run();
            }
        }
    }
}
