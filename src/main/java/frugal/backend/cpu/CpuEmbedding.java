package frugal.backend.cpu;

import frugal.tensor.Tensor;

import java.lang.foreign.MemorySegment;

import static frugal.backend.cpu.Vec.axpy;

/** Embedding lookup and its scatter-add backward. */
final class CpuEmbedding {
    private CpuEmbedding() {
    }

    static void forward(Tensor out, Tensor table, Tensor ids, int rows, int cols, boolean accumulate) {
        MemorySegment o = out.data(), tb = table.data();
        long tableRows = table.size() / cols;
        Parallel.forRange(rows, 16, (r0, r1) -> {
            for (int r = r0; r < r1; r++) {
                int id = ids.getInt(r);
                if (id < 0 || id >= tableRows) {
                    throw new IllegalArgumentException("id " + id + " at row " + r + " is outside the table of " + tableRows + " rows");
                }
                if (!accumulate) MemorySegment.copy(tb, (long) id * cols * 4, o, (long) r * cols * 4, cols * 4L);
                else axpy(1f, tb, (long) id * cols, o, (long) r * cols, cols);
            }
        });
    }

    static void backward(Tensor dtable, Tensor dout, Tensor ids, int rows, int cols) {
        MemorySegment d = dtable.data(), dos = dout.data();
        // Split by column ranges: a token repeated in the batch then has a single writer per element.
        Parallel.forRange(cols, 16, (c0, c1) -> {
            for (int r = 0; r < rows; r++) {
                axpy(1f, dos, (long) r * cols + c0, d, (long) ids.getInt(r) * cols + c0, c1 - c0);
            }
        });
    }
}
