package frugal.backend.cpu;

import frugal.tensor.DType;
import frugal.tensor.Tensor;
import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

/**
 * The kernels that reduce or use transcendentals give the same bits on every call: the first ones (interpreter,
 * C1), later ones (C2), and whichever thread finishes first. Exact resumption of training depends on it.
 */
class CpuDeterminismTest {
    private static final int CALLS = 1000;
    private final long seed = new Random().nextLong();
    private final Random random = new Random(seed);
    private final CpuBackend ops = new CpuBackend();

    private Tensor random(int n) {
        Tensor t = ops.allocate(DType.F32, n);
        float[] values = new float[n];
        for (int i = 0; i < n; i++) values[i] = (float) random.nextGaussian() * 2;
        ops.upload(t, MemorySegment.ofArray(values));
        return t;
    }

    private float[] read(Tensor t) {
        float[] values = new float[(int) t.size()];
        ops.download(t, MemorySegment.ofArray(values));
        return values;
    }

    private record Kernel(String name, Runnable run, Tensor... outputs) {
    }

    @Test
    void sameBitsOnEveryCall() {
        int rows = 64, cols = 96, vocab = 300, batch = 2, seq = 16, heads = 2, headDim = 16;
        int n = rows * cols, width = 3 * heads * headDim;
        Tensor x = random(n), dout = random(n), out = ops.allocate(DType.F32, n), dx = ops.allocate(DType.F32, n);
        Tensor gateUp = random(2 * n), dGateUp = ops.allocate(DType.F32, 2 * n);
        Tensor logits = random(rows * vocab), dlogits = ops.allocate(DType.F32, rows * vocab), losses = ops.allocate(DType.F32, rows);
        Tensor targets = ops.allocate(DType.I32, rows);
        ops.upload(targets, MemorySegment.ofArray(random.ints(rows, 0, vocab).toArray()));
        Tensor weight = random(cols), bias = random(cols), mean = ops.allocate(DType.F32, rows), rstd = ops.allocate(DType.F32, rows);
        Tensor dweight = ops.allocate(DType.F32, cols), dbias = ops.allocate(DType.F32, cols), norm = ops.allocate(DType.F32, 1);
        Tensor qkv = random(batch * seq * width), attnOut = ops.allocate(DType.F32, batch * seq * heads * headDim);
        Tensor lse = ops.allocate(DType.F32, batch * heads * seq), dAttnOut = random(batch * seq * heads * headDim);
        Tensor dqkv = ops.allocate(DType.F32, batch * seq * width);
        ops.layerNormForward(out, mean, rstd, x, weight, bias, rows, cols, 1e-5f);
        ops.attentionForward(attnOut, lse, qkv, batch, seq, heads, heads, headDim);
        List<Kernel> kernels = List.of(
                new Kernel("gelu", () -> ops.geluForward(out, x, n), out),
                new Kernel("gelu backward", () -> ops.geluBackward(dx, dout, x, n), dx),
                new Kernel("swiglu", () -> ops.swigluForward(out, gateUp, rows, cols), out),
                new Kernel("swiglu backward", () -> ops.swigluBackward(dGateUp, dout, gateUp, rows, cols), dGateUp),
                new Kernel("cross-entropy", () -> ops.crossEntropy(losses, dlogits, logits, targets, rows, vocab, 0.5f), losses, dlogits),
                new Kernel("layernorm backward", () -> {
                    ops.zero(dx);
                    ops.zero(dweight);
                    ops.zero(dbias);
                    ops.layerNormBackward(dx, dweight, dbias, dout, x, weight, mean, rstd, rows, cols);
                }, dx, dweight, dbias),
                new Kernel("rmsnorm backward", () -> {
                    ops.zero(dx);
                    ops.zero(dweight);
                    ops.rmsNormBackward(dx, dweight, dout, x, weight, rstd, rows, cols);
                }, dx, dweight),
                new Kernel("sum of squares", () -> ops.sumOfSquares(norm, x, n, false), norm),
                new Kernel("attention backward", () -> ops.attentionBackward(dqkv, dAttnOut, attnOut, lse, qkv,
                        batch, seq, heads, heads, headDim), dqkv));
        List<List<float[]>> first = new ArrayList<>();
        for (Kernel k : kernels) {
            k.run().run();
            List<float[]> results = new ArrayList<>();
            for (Tensor t : k.outputs()) results.add(read(t));
            first.add(results);
        }
        for (int call = 1; call < CALLS; call++) {
            for (int i = 0; i < kernels.size(); i++) {
                Kernel k = kernels.get(i);
                k.run().run();
                for (int o = 0; o < k.outputs().length; o++) {
                    assertArrayEquals(first.get(i).get(o), read(k.outputs()[o]), "seed " + seed + ": " + k.name() + ", call " + call);
                }
            }
        }
    }
}
