package frugal.train;

import frugal.backend.Backend;
import frugal.backend.ProfilingBackend;
import frugal.model.Transformer;
import frugal.nn.Context;
import frugal.stash.StashPolicy;
import frugal.tensor.DType;
import frugal.tensor.Tensor;

import java.lang.foreign.MemorySegment;

/**
 * One training step on fixed shapes, the whole of it on the backend: upload ids and targets; zero the gradients;
 * forward and backward over each micro-batch (gradients add up, each scaled by 1/all rows, so that accumulating
 * k micro-batches of B sequences matches one batch of k·B); AdamW update; download the per-position losses. From
 * the second call on, the device part is captured once as a graph ({@link Backend#capture}) and replayed, where
 * the backend can (CUDA); elsewhere it runs op by op. The learning rate and step count reach the captured update
 * through device memory ({@link AdamW#prepare}). A new stage of the stash policy (other formats, other buffers) runs
 * op by op once and is captured again; a stage that rounds stochastically is never replayed, since its random bits
 * come from seeds the host draws every step. Parameter values written from outside after the capture (loading
 * weights) are not seen by the replayed step's compute copies: make a new TrainStep then.
 */
public final class TrainStep implements AutoCloseable {
    private final Transformer model;
    private final AdamW optimizer;
    private final Backend ops;
    private final Context ctx;
    private final int batch;
    private final int seq;
    private final int accumulation;
    private final float maxNorm;
    private final Tensor ids, targets, losses;
    private final float[] hostLosses;
    private boolean graphs;
    /** Whether capture was attempted: a backend that cannot capture is not asked again every step. */
    private boolean captureTried;
    /** Steps run since the stash stage last changed: the first allocates what the stage needs, outside any capture. */
    private int callsInStage;
    private int stage;
    private boolean replayed;
    private long traffic = -1;
    private Backend.Graph graph;

    /** A step over one batch of {@code batch} sequences (no accumulation). */
    public TrainStep(Transformer model, AdamW optimizer, Backend ops, Context ctx, int batch, int seq, float maxNorm, boolean graphs) {
        this(model, optimizer, ops, ctx, batch, seq, 1, maxNorm, graphs);
    }

    /** A step over {@code accumulation} micro-batches of {@code batch} sequences each. */
    public TrainStep(Transformer model, AdamW optimizer, Backend ops, Context ctx, int batch, int seq, int accumulation,
                     float maxNorm, boolean graphs) {
        this.model = model;
        this.optimizer = optimizer;
        this.ops = ops;
        this.ctx = ctx;
        this.batch = batch;
        this.seq = seq;
        this.accumulation = accumulation;
        this.maxNorm = maxNorm;
        this.graphs = graphs;
        int rows = accumulation * batch * seq;
        ids = ops.allocate(DType.I32, rows);
        targets = ops.allocate(DType.I32, rows);
        losses = ops.allocate(DType.F32, rows);
        hostLosses = new float[rows];
    }

    /** Turns graph replay on or off (off: every op is issued from the host, as a profiler needs). */
    public void setGraphs(boolean graphs) {
        this.graphs = graphs;
    }

    /** Whether the last step was a graph replay. */
    public boolean replaying() {
        return replayed;
    }

    /**
     * Runs one step at learning rate lr on ids/targets [accumulation*batch*seq], micro-batch after micro-batch;
     * returns the mean loss over all of them (before the update).
     */
    public double run(int[] in, int[] tg, float lr) {
        ops.upload(ids, MemorySegment.ofArray(in));
        ops.upload(targets, MemorySegment.ofArray(tg));
        optimizer.prepare(lr);
        StashPolicy policy = ctx.stash().policy();
        if (policy.stage() != stage) {
            stage = policy.stage();
            callsInStage = 0;
            captureTried = false;
            close();
        }
        boolean replayable = graphs && !policy.roundsStochastically();
        if (replayable && !captureTried && callsInStage >= 1) {
            graph = ops.capture(this::deviceStep);
            captureTried = true;
        }
        replayed = replayable && graph != null;
        if (replayed) graph.replay();
        else deviceStep();
        callsInStage++;
        ops.download(losses, MemorySegment.ofArray(hostLosses));
        double sum = 0;
        for (float l : hostLosses) sum += l;
        return sum / hostLosses.length;
    }

    /** The pre-clip gradient norm of the last step. */
    public float gradNorm() {
        return optimizer.gradNorm();
    }

    /**
     * Bytes the ops of the step read and wrote, as {@link ProfilingBackend} counts them (the compulsory traffic at
     * the operands' types); -1 unless the backend is one. A replayed step counts as the step it was captured from.
     */
    public long trafficBytes() {
        return traffic;
    }

    private void deviceStep() {
        long before = ops instanceof ProfilingBackend p ? p.trafficBytes() : 0;
        issueStep();
        if (ops instanceof ProfilingBackend p) traffic = p.trafficBytes() - before;
    }

    private void issueStep() {
        int rows = batch * seq;
        model.params().zeroGrad();
        for (int micro = 0; micro < accumulation; micro++) {
            int from = micro * rows;
            model.forward(ctx, ids.slice(from, rows), targets.slice(from, rows), losses.slice(from, rows), batch, seq,
                    1f / (rows * accumulation));
            model.backward(ctx, batch, seq);
        }
        optimizer.update(maxNorm);
    }

    @Override
    public void close() {
        if (graph != null) graph.close();
        graph = null;
    }
}
