package frugal.backend.cpu;

import frugal.tensor.DType;
import frugal.tensor.Tensor;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Runs every CPU op once on inputs drawn from a seed and fingerprints the bits of what each op wrote. {@link #main}
 * prints the fingerprints, for a run in another JVM.
 */
final class OpsWorkload {
    /** Sizes of the tensors; elements is that of element-wise ops, seq and vocab those of attention and the loss. */
    record Sizes(int rows, int cols, int elements, int seq, int vocab) {
    }

    /** Work that splits over two threads and ends in scalar tails. */
    static final Sizes THREADED = new Sizes(40, 259, 2 * 16 * 4096 + 5, 24, 1031);
    /** Work on the calling thread, cheap enough to repeat until C2 has compiled every kernel. */
    static final Sizes SMALL = new Sizes(2, 67, 1027, 5, 259);

    private OpsWorkload() {
    }

    static Map<String, Integer> run(long seed, Sizes size) {
        Map<String, Integer> bits = new LinkedHashMap<>();
        try (OpsFixture f = new OpsFixture(seed)) {
            CpuBackend cpu = f.cpu;
            int rows = size.rows(), cols = size.cols(), n = size.elements();

            Tensor a = f.randn(rows, cols), b = f.randn(cols, cols), c = f.randn(rows, cols);
            cpu.matmul(c, a, b, rows, cols, cols, false, true, true);
            bits.put("matmul", fingerprint(c));

            Tensor bias = f.randn(cols), dbias = f.randn(cols), x = f.randn(rows, cols), dout = f.randn(rows, cols);
            cpu.addBias(x, bias, rows, cols);
            bits.put("addBias", fingerprint(x));
            cpu.biasBackward(dbias, dout, rows, cols);
            bits.put("biasBackward", fingerprint(dbias));

            Tensor w = f.normal(1, 1, cols), out = f.randn(rows, cols), mean = f.randn(rows), rstd = f.randn(rows);
            Tensor dx = f.randn(rows, cols), dw = f.randn(cols), db = f.randn(cols);
            cpu.layerNormForward(out, mean, rstd, x, w, bias, rows, cols, 1e-5f);
            bits.put("layerNormForward", fingerprint(out, mean, rstd));
            cpu.layerNormBackward(dx, dw, db, dout, x, w, mean, rstd, rows, cols);
            bits.put("layerNormBackward", fingerprint(dx, dw, db));
            cpu.rmsNormForward(out, rstd, x, w, rows, cols, 1e-6f);
            bits.put("rmsNormForward", fingerprint(out, rstd));
            cpu.rmsNormBackward(dx, dw, dout, x, w, rstd, rows, cols);
            bits.put("rmsNormBackward", fingerprint(dx, dw));

            Tensor e = f.normal(0, 4, n), eOut = f.randn(n), eGrad = f.randn(n), eDx = f.randn(n);
            cpu.geluForward(eOut, e, n);
            bits.put("geluForward", fingerprint(eOut));
            cpu.geluBackward(eDx, eGrad, e, n);
            bits.put("geluBackward", fingerprint(eDx));
            cpu.add(eOut, eOut, e, n);
            bits.put("add", fingerprint(eOut));

            Tensor gateUp = f.normal(0, 3, rows, 2 * cols), dGateUp = f.randn(rows, 2 * cols);
            cpu.swigluForward(out, gateUp, rows, cols);
            bits.put("swigluForward", fingerprint(out));
            cpu.swigluBackward(dGateUp, dout, gateUp, rows, cols);
            bits.put("swigluBackward", fingerprint(dGateUp));

            int batch = 2, seq = size.seq(), nHead = 6, nKv = 2, headDim = 36, width = (nHead + 2 * nKv) * headDim;
            Tensor qkv = f.randn(batch * seq, width), dqkv = f.randn(batch * seq, width);
            Tensor att = f.randn(batch * seq, nHead * headDim), lse = f.randn(batch, nHead, seq), datt = f.randn(batch * seq, nHead * headDim);
            cpu.rope(qkv, batch, seq, nHead, nKv, headDim, 10000f, false);
            bits.put("rope", fingerprint(qkv));
            cpu.attentionForward(att, lse, qkv, batch, seq, nHead, nKv, headDim);
            bits.put("attentionForward", fingerprint(att, lse));
            cpu.attentionBackward(dqkv, datt, att, lse, qkv, batch, seq, nHead, nKv, headDim);
            bits.put("attentionBackward", fingerprint(dqkv));
            cpu.rope(dqkv, batch, seq, nHead, nKv, headDim, 10000f, true);
            bits.put("rope inverse", fingerprint(dqkv));

            int tokens = 8;
            Tensor ids = f.ids(rows, tokens), emb = f.randn(tokens, cols);
            cpu.embeddingForward(emb, x, ids, tokens, cols, true);
            bits.put("embeddingForward", fingerprint(emb));
            cpu.embeddingBackward(dx, emb, ids, tokens, cols);
            bits.put("embeddingBackward", fingerprint(dx));

            int vocab = size.vocab();

            Tensor logits = f.normal(0, 3, tokens, vocab), losses = f.randn(tokens), targets = f.ids(vocab, tokens);
            cpu.crossEntropy(losses, logits, logits, targets, tokens, vocab, 1f / tokens);
            bits.put("crossEntropy", fingerprint(losses, logits));

            Tensor normSquared = cpu.allocate(DType.F32, 1), m = f.randn(n), v = f.randn(n);
            cpu.sumOfSquares(normSquared, eGrad, n, false);
            bits.put("sumOfSquares", fingerprint(normSquared));
            for (int i = 0; i < n; i++) v.set(i, v.get(i) * v.get(i));
            cpu.adamw(e, eGrad, m, v, n, 0.01f, 0.9f, 0.95f, 1e-8f, 0.1f, 3, normSquared, 1f);
            bits.put("adamw", fingerprint(e, m, v));
        }
        return bits;
    }

    private static int fingerprint(Tensor... outputs) {
        int h = 1;
        for (Tensor t : outputs) h = 31 * h + Arrays.hashCode(t.toFloatArray());
        return h;
    }

    /** Args: seed, rounds of warm-up; prints op=fingerprint of the threaded work after the warm-up. */
    public static void main(String[] args) {
        long seed = Long.parseLong(args[0]);
        for (int i = 0; i < Integer.parseInt(args[1]); i++) run(seed + 1 + i, SMALL);
        run(seed, THREADED).forEach((op, bits) -> System.out.println(op + "=" + bits));
    }
}
