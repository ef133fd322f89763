package frugal.backend.cuda;

import frugal.backend.Backend;
import frugal.backend.cpu.CpuBackend;
import frugal.io.Safetensors;
import frugal.model.HfWeights;
import frugal.model.Init;
import frugal.model.ModelConfig;
import frugal.model.ModelFiles;
import frugal.model.Transformer;
import frugal.nn.Context;
import frugal.nn.Param;
import frugal.stash.StashPolicy;
import frugal.tensor.DType;
import frugal.tensor.Tensor;
import frugal.train.AdamW;
import frugal.train.TrainStep;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Whole models through the CUDA backend, in fp32 and in bf16 mixed precision: the Hugging Face fixtures (logits,
 * loss, gradients), a 200-step GPT-2 training run against the CPU run of the same seed and data (plain and with
 * the step captured as a CUDA graph), and checkpoints moved between CPU and GPU. Skipped (per test) without a GPU.
 */
class CudaModelTest {

    @BeforeEach
    void requireGpu() {
        assumeTrue(CudaBackend.isAvailable(), () -> "no CUDA: " + CudaBackend.unavailableReason());
    }

    static CudaBackend gpu(String precision) {
        return new CudaBackend(0, false, precision.equals("bf16") ? DType.BF16 : DType.F32);
    }

    static float[] read(Backend b, Tensor t) {
        if (b instanceof CudaBackend g) return CudaBf16OpsTest.download(g, t);
        return t.toFloatArray();
    }

    static double relErr(float[] expected, float[] actual) {
        assertEquals(expected.length, actual.length);
        double maxErr = 0, maxRef = 0;
        for (int i = 0; i < expected.length; i++) {
            assertTrue(Float.isFinite(actual[i]), "non-finite value at " + i);
            maxErr = Math.max(maxErr, Math.abs(expected[i] - actual[i]));
            maxRef = Math.max(maxRef, Math.abs(expected[i]));
        }
        return maxErr / Math.max(maxRef, 1e-30);
    }

    @ParameterizedTest
    @CsvSource({"gpt2-tiny, fp32, 1e-4, 1e-4", "llama-tiny, fp32, 1e-4, 1e-4", "gpt2-tiny, bf16, 3e-2, 8e-2", "llama-tiny, bf16, 3e-2, 8e-2"})
    void huggingFaceFixtures(String name, String precision, double logitTol, double gradTol) {
        Path dir = Path.of("src/test/resources/fixtures", name);
        try (CudaBackend g = gpu(precision); Safetensors ref = Safetensors.open(dir.resolve("reference.safetensors"))) {
            Transformer model = ModelFiles.load(dir, g);
            int[] idShape = ref.shape("input_ids");
            int batch = idShape[0], seq = idShape[1], rows = batch * seq;
            Tensor ids = g.allocate(DType.I32, rows), targets = g.allocate(DType.I32, rows), losses = g.allocate(DType.F32, rows);
            g.upload(ids, MemorySegment.ofArray(ref.readInts("input_ids")));
            g.upload(targets, MemorySegment.ofArray(ref.readInts("targets")));
            Context ctx = Context.of(g);
            Tensor logits = model.forward(ctx, ids, targets, losses, batch, seq, 0f);
            double logitErr = relErr(ref.readFloats("logits"), read(g, logits));
            float[] l = read(g, losses);
            double loss = 0;
            for (float x : l) loss += x / rows;
            double refLoss = ref.readFloats("loss")[0];
            model.forward(ctx, ids, targets, losses, batch, seq, 1f / rows);
            model.backward(ctx, batch, seq);
            HfWeights.Source grads = ModelFiles.source(ref, "grad.");
            double worstGrad = 0;
            String worstName = "";
            for (Param p : model.params().all()) {
                float[] expected = HfWeights.toInternal(p, grads);
                double e = relErr(expected, read(g, p.grad()));
                // GPT-2's key bias has an exactly-zero gradient in exact arithmetic: only rounding noise to compare
                if (p.name().endsWith("c_attn.bias")) continue;
                if (e > worstGrad) {
                    worstGrad = e;
                    worstName = p.name();
                }
            }
            System.out.printf("%s %s through CUDA: logits rel %.2e, loss %.6f vs %.6f, worst gradient rel %.2e (%s)%n",
                    name, precision, logitErr, loss, refLoss, worstGrad, worstName);
            assertTrue(logitErr <= logitTol, name + " " + precision + " logits: " + logitErr);
            assertEquals(refLoss, loss, logitTol * 10 * Math.abs(refLoss), "loss");
            assertTrue(worstGrad <= gradTol, name + " " + precision + " gradient of " + worstName + ": " + worstGrad);
        }
    }

    /** Byte tokens of Shakespeare (test resource), cut into windows by a seeded sampler. */
    static int[] corpus() throws IOException {
        byte[] text = Files.readAllBytes(Path.of("src/test/resources/tinyshakespeare-100k.txt"));
        int[] t = new int[text.length];
        for (int i = 0; i < text.length; i++) t[i] = text[i] & 0xff;
        return t;
    }

    static final ModelConfig TINY = ModelConfig.gpt2(256, 64, 128, 2, 2); // head dim 64: the flash kernels in bf16

    /** Losses of a run of the given steps on the given backend. */
    static double[] train(Backend ops, int[] tokens, int steps, boolean graphs) {
        return train(ops, tokens, steps, graphs, StashPolicy.keep());
    }

    /** The same through a stash of the given policy (its stages over these steps). */
    static double[] train(Backend ops, int[] tokens, int steps, boolean graphs, StashPolicy stash) {
        int batch = 8, seq = 64, rows = batch * seq;
        Transformer model = new Transformer(TINY, ops);
        Init.initialize(model, ops, 42);
        AdamW opt = new AdamW(ops, model.params(), 0.9f, 0.95f, 1e-8f, 0.1f);
        Random data = new Random(7);
        double[] losses = new double[steps];
        Context ctx = Context.of(ops, stash, 3);
        try (TrainStep step = new TrainStep(model, opt, ops, ctx, batch, seq, 1f, graphs)) {
            for (int s = 0; s < steps; s++) {
                int[] in = new int[rows], tg = new int[rows];
                for (int b = 0; b < batch; b++) {
                    int start = data.nextInt(tokens.length - seq - 1);
                    System.arraycopy(tokens, start, in, b * seq, seq);
                    System.arraycopy(tokens, start + 1, tg, b * seq, seq);
                }
                float lr = 3e-3f * Math.min(1f, (s + 1) / 20f);
                ctx.stash().beginStep(s + 1);
                losses[s] = step.run(in, tg, lr);
            }
        }
        return losses;
    }

    static double meanAbsDiffLast(double[] a, double[] b, int last) {
        double s = 0;
        for (int i = a.length - last; i < a.length; i++) s += Math.abs(a[i] - b[i]);
        return s / last;
    }

    @Test
    void trainingTracksCpu() throws IOException {
        int[] tokens = corpus();
        int steps = 200;
        double[] cpu;
        try (CpuBackend c = new CpuBackend()) {
            cpu = train(c, tokens, steps, false);
        }
        double[] fp32, fp32Graph, bf16Graph;
        try (CudaBackend g = gpu("fp32")) {
            fp32 = train(g, tokens, steps, false);
        }
        try (CudaBackend g = gpu("fp32")) {
            fp32Graph = train(g, tokens, steps, true);
        }
        try (CudaBackend g = gpu("bf16")) {
            bf16Graph = train(g, tokens, steps, true);
        }
        System.out.println("step  cpu     cuda-fp32  cuda-fp32-graph  cuda-bf16-graph");
        for (int s = 0; s < steps; s += 20) {
            System.out.printf("%4d  %.4f  %.4f     %.4f           %.4f%n", s + 1, cpu[s], fp32[s], fp32Graph[s], bf16Graph[s]);
        }
        System.out.printf(" 200  %.4f  %.4f     %.4f           %.4f%n", cpu[steps - 1], fp32[steps - 1], fp32Graph[steps - 1], bf16Graph[steps - 1]);
        double d32 = meanAbsDiffLast(cpu, fp32, 50), dGraph = meanAbsDiffLast(cpu, fp32Graph, 50), d16 = meanAbsDiffLast(cpu, bf16Graph, 50);
        System.out.printf("mean |loss − cpu| over the last 50 steps: fp32 %.4f, fp32 graph %.4f, bf16 graph %.4f%n", d32, dGraph, d16);
        assertTrue(cpu[steps - 1] < cpu[0] - 1.0, "the CPU run learns");
        assertTrue(d32 < 0.05, "fp32 tracks the CPU: " + d32);
        assertTrue(dGraph < 0.05, "fp32 with graphs tracks the CPU: " + dGraph);
        assertTrue(d16 < 0.1, "bf16 tracks the CPU: " + d16);
    }

    @Test
    void checkpointsMoveBetweenCpuAndGpu(@TempDir Path tmp) {
        int batch = 2, seq = 32, rows = batch * seq;
        int[] in = new Random(3).ints(rows, 0, 256).toArray();
        for (String precision : new String[]{"fp32", "bf16"}) {
            try (CpuBackend c = new CpuBackend(); CudaBackend g = gpu(precision)) {
                // GPU → CPU: a model trained a few steps on the GPU, saved, loaded on the CPU
                Transformer onGpu = new Transformer(TINY, g);
                Init.initialize(onGpu, g, 5);
                Path dir = tmp.resolve("from-gpu-" + precision);
                ModelFiles.save(onGpu, g, dir);
                Transformer onCpu = ModelFiles.load(dir, c);
                float[] cpuLogits = logits(c, onCpu, in, batch, seq), gpuLogits = logits(g, onGpu, in, batch, seq);
                double e1 = relErr(cpuLogits, gpuLogits);
                // CPU → GPU
                Path back = tmp.resolve("from-cpu-" + precision);
                ModelFiles.save(onCpu, c, back);
                Transformer again = ModelFiles.load(back, g);
                double e2 = relErr(cpuLogits, logits(g, again, in, batch, seq));
                System.out.printf("checkpoint %s: GPU→CPU logits rel %.2e, CPU→GPU logits rel %.2e%n", precision, e1, e2);
                double tol = precision.equals("fp32") ? 1e-5 : 3e-2;
                assertTrue(e1 <= tol && e2 <= tol, precision + " checkpoint logits: " + e1 + ", " + e2);
            }
        }
    }

    static float[] logits(Backend ops, Transformer model, int[] in, int batch, int seq) {
        Tensor ids = ops.allocate(DType.I32, batch * seq);
        ops.upload(ids, MemorySegment.ofArray(in));
        return read(ops, model.forward(Context.of(ops), ids, null, null, batch, seq, 0f));
    }
}
