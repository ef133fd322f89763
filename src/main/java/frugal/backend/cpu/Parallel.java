package frugal.backend.cpu;

import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.RecursiveAction;

/** Splits index ranges over the machine's cores; kernels run their inner loops on each chunk. */
public final class Parallel {
    public static final int THREADS = Math.max(1, Integer.getInteger("frugal.threads",
            Runtime.getRuntime().availableProcessors()));
    private static final ForkJoinPool POOL = new ForkJoinPool(THREADS);

    private Parallel() {
    }

    @FunctionalInterface
    public interface RangeBody {
        void run(int from, int to);
    }

    /** Runs body over [0, n) in about {@code THREADS} contiguous chunks; small ranges run inline. */
    public static void forRange(int n, RangeBody body) {
        forRange(n, 1, body);
    }

    /** As {@link #forRange(int, RangeBody)}, with chunks no smaller than {@code grain}. */
    public static void forRange(int n, int grain, RangeBody body) {
        int chunks = Math.min(THREADS, Math.max(1, n / Math.max(1, grain)));
        if (chunks <= 1 || inPool()) {
            body.run(0, n);
            return;
        }
        POOL.invoke(new RecursiveAction() {
            @Override
            protected void compute() {
                RecursiveAction[] tasks = new RecursiveAction[chunks];
                for (int c = 0; c < chunks; c++) {
                    int from = (int) ((long) n * c / chunks), to = (int) ((long) n * (c + 1) / chunks);
                    tasks[c] = new RecursiveAction() {
                        @Override
                        protected void compute() {
                            body.run(from, to);
                        }
                    };
                }
                invokeAll(tasks);
            }
        });
    }

    private static boolean inPool() {
        return Thread.currentThread() instanceof java.util.concurrent.ForkJoinWorkerThread w && w.getPool() == POOL;
    }

    @FunctionalInterface
    public interface LongRangeBody {
        void run(long from, long to);
    }

    /** Element-wise work over [0, n) in chunks of whole 4096-element blocks (vector aligned). */
    public static void forElements(long n, LongRangeBody body) {
        int blocks = (int) Math.min(Integer.MAX_VALUE, (n + 4095) / 4096);
        forRange(blocks, 16, (b0, b1) -> body.run(b0 * 4096L, Math.min(n, b1 * 4096L)));
    }
}
