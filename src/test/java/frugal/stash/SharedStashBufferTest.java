package frugal.stash;

import frugal.backend.cpu.CpuBackend;
import frugal.model.Init;
import frugal.model.ModelConfig;
import frugal.model.Transformer;
import frugal.nn.Context;
import frugal.nn.Workspace;
import frugal.quant.QuantFormat;
import frugal.tensor.DType;
import frugal.tensor.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A tensor stashed in a quantized format lives in a buffer that every layer shares ({@link Stash#output}): what each
 * layer saved must still come back as its own, and the activation memory of a step must drop accordingly.
 */
class SharedStashBufferTest {
    private static final CpuBackend CPU = new CpuBackend();
    private static final long SEED = System.nanoTime();

    @AfterAll
    static void close() {
        CPU.close();
    }

    @Test
    void eachLayerReadsBackWhatItSavedThroughTheSharedBuffer() {
        Stash stash = new Stash(CPU, StashPolicy.parse("q1 = bfp8/32/rn\nattention_output = int8/32/rn", 1), 1);
        Workspace buffers = new Workspace(CPU);
        stash.beginStep(1);
        Random rng = new Random(SEED);
        int[] shape = {4, 48};
        float[][] written = new float[3][];
        for (int layer = 0; layer < 3; layer++) {
            Tensor t = stash.output(buffers, "h" + layer + ".att", "attn.att", shape, StashKind.ATTENTION_OUTPUT, StashKind.LINEAR_INPUT);
            written[layer] = randoms(rng, 4 * 48);
            CPU.upload(t, MemorySegment.ofArray(written[layer]));
            stash.save("h" + layer + ".att", StashKind.ATTENTION_OUTPUT, t);
            stash.save("h" + layer + ".proj.in", StashKind.LINEAR_INPUT, t); // another format: a packed copy of its own
        }
        QuantFormat int8 = QuantFormat.parse("int8/32/rn"), bfp8 = QuantFormat.parse("bfp8/32/rn");
        for (int layer = 2; layer >= 0; layer--) {
            assertArrayEquals(roundTrip(written[layer], int8), stash.load("h" + layer + ".att").toFloatArray(), "layer " + layer);
            assertArrayEquals(roundTrip(written[layer], bfp8), stash.load("h" + layer + ".proj.in").toFloatArray(), "layer " + layer);
        }
    }

    @Test
    void aTensorLoadedAgainSoonIsDequantizedOnceAndLaterAgain() {
        Stash stash = new Stash(CPU, StashPolicy.parse("q1 = bfp4/32/rn", 1), 1);
        Workspace buffers = new Workspace(CPU);
        stash.beginStep(1);
        Random rng = new Random(SEED);
        int[] shape = {4, 64};
        float[][] written = new float[6][];
        for (int i = 0; i < 6; i++) {
            Tensor t = buffers.get("t" + i, shape);
            written[i] = randoms(rng, 4 * 64);
            CPU.upload(t, MemorySegment.ofArray(written[i]));
            stash.save("t" + i + ".att", StashKind.ATTENTION_OUTPUT, t);
            stash.save("t" + i + ".proj.in", StashKind.LINEAR_INPUT, t); // the same format: stored once
        }
        QuantFormat bfp4 = QuantFormat.parse("bfp4/32/rn");
        long perTensor = bfp4.bytes(4 * 64);
        Tensor first = stash.load("t0.proj.in");
        assertSame(first, stash.load("t0.att"), "loaded again at once: the same dequantized copy");
        assertTrue(stash.bytesRead() == perTensor, "read back once: " + stash.bytesRead());
        for (int i = 1; i <= 4; i++) assertArrayEquals(roundTrip(written[i], bfp4), stash.load("t" + i + ".att").toFloatArray());
        // four loads later t0's buffer went to t4: loading t0 dequantizes it again
        assertArrayEquals(roundTrip(written[0], bfp4), stash.load("t0.att").toFloatArray());
        assertArrayEquals(roundTrip(written[4], bfp4), stash.load("t4.proj.in").toFloatArray());
        assertTrue(stash.bytesRead() == 6 * perTensor, "t0 read back twice, t1..t4 once: " + stash.bytesRead());
    }

    @Test
    void aKeptKindGetsABufferOfItsOwnAndCannotBeSavedFromASharedOne() {
        Stash stash = new Stash(CPU, StashPolicy.parse("q1 = bfp4", 1), 1);
        Workspace buffers = new Workspace(CPU);
        stash.beginStep(1);
        Tensor kept = stash.output(buffers, "h0.x", "x", new int[]{8, 32}, StashKind.LINEAR_INPUT, StashKind.SOFTMAX_STATS);
        Tensor same = stash.output(buffers, "h1.x", "x", new int[]{8, 32}, StashKind.LINEAR_INPUT, StashKind.SOFTMAX_STATS);
        assertTrue(kept.data().address() != same.data().address(), "kept tensors of two layers must not share a buffer");
        Tensor shared = stash.output(buffers, "h0.y", "y", new int[]{8, 32}, StashKind.LINEAR_INPUT);
        org.junit.jupiter.api.Assertions.assertEquals(shared.data().address(), stash.output(buffers, "h1.y", "y", new int[]{8, 32}, StashKind.LINEAR_INPUT).data().address());
        assertThrows(IllegalStateException.class, () -> stash.save("h0.y", StashKind.SOFTMAX_STATS, shared));
    }

    /** GPT-2 with 6 layers: a 4-bit stash must hold a step's activations in far less memory than a kept one. */
    @Test
    void quantizedStashLowersTheActivationMemoryOfAStep() {
        ModelConfig c = ModelConfig.gpt2(64, 32, 64, 6, 2);
        long kept = activationBytes(c, Context.of(CPU, StashPolicy.keep(), 1));
        Context quantized = Context.of(CPU, StashPolicy.named("bfp4", 1), 1);
        long shared = activationBytes(c, quantized) + quantized.stash().bytesHeld();
        // Per layer, 9 activations of [rows, 64..256] floats are kept; quantized, one layer's worth of buffers remains.
        assertTrue(shared < kept / 2, "kept " + kept + " bytes, quantized " + shared + " bytes (buffers + packed stash)");
    }

    private static long activationBytes(ModelConfig c, Context ctx) {
        Transformer model = new Transformer(c, CPU);
        Init.initialize(model, CPU, 3);
        int batch = 2, seq = 32;
        Tensor losses = RandomBatchStep.forward(CPU, model, ctx, batch, seq, SEED);
        long held = ctx.buffers().bytes();
        model.backward(ctx, batch, seq);
        for (float l : losses.toFloatArray()) assertTrue(Float.isFinite(l));
        return held;
    }

    private static float[] roundTrip(float[] x, QuantFormat f) {
        Tensor src = CPU.allocate(DType.F32, x.length), out = CPU.allocate(DType.F32, x.length);
        Tensor packed = CPU.allocate(DType.I8, (int) f.packedBytes(x.length)), scales = CPU.allocate(DType.I8, (int) f.scalesBytes(x.length));
        CPU.upload(src, MemorySegment.ofArray(x));
        CPU.quantize(packed, scales, src, x.length, f, 0);
        CPU.dequantize(out, packed, scales, x.length, f);
        return out.toFloatArray();
    }

    private static float[] randoms(Random rng, int n) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) rng.nextGaussian() * (i % 37 == 0 ? 20 : 1);
        return x;
    }
}
