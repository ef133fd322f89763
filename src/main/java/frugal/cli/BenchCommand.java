package frugal.cli;

import frugal.backend.Backends;
import frugal.bench.LargestBatch;
import frugal.backend.ProfilingBackend;
import frugal.model.Init;
import frugal.model.ModelConfig;
import frugal.model.Transformer;
import frugal.nn.Context;
import frugal.stash.Stash;
import frugal.stash.StashKind;
import frugal.stash.StashLedger;
import frugal.train.AdamW;
import frugal.train.Preset;
import frugal.train.StashOptions;
import frugal.train.TrainStep;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;

/**
 * {@code frugal bench}: times whole training steps (upload of the batch, forward, backward, AdamW, download of the
 * losses) and breaks them down per op. On CUDA the timed steps replay a captured graph, and the per-op table comes
 * from separate steps issued op by op with a synchronization after each.
 */
@Command(name = "bench", mixinStandardHelpOptions = true,
        description = "Time full training steps (forward, backward, AdamW) with a per-op breakdown.")
final class BenchCommand implements Runnable {
    /** Dense bf16 tensor-core peak of an H100 SXM, for MFU. */
    static final double H100_BF16_FLOPS = 989e12;

    @Option(names = "--preset", defaultValue = "gpt2-124m", description = "model shape (default: ${DEFAULT-VALUE})")
    String preset;
    @Option(names = "--vocab", defaultValue = "50257", description = "vocabulary size (default: ${DEFAULT-VALUE})")
    int vocab;
    @Option(names = {"-b", "--batch"}, defaultValue = "4", description = "batch (default: ${DEFAULT-VALUE})")
    int batch;
    @Option(names = {"-t", "--seq"}, defaultValue = "64", description = "sequence length (default: ${DEFAULT-VALUE})")
    int seq;
    @Option(names = {"-n", "--steps"}, defaultValue = "10", description = "timed steps (default: ${DEFAULT-VALUE})")
    int steps;
    @Option(names = "--warmup", defaultValue = "3", description = "untimed steps first (default: ${DEFAULT-VALUE})")
    int warmup;
    @Option(names = "--device", defaultValue = "cpu", description = "cpu, cuda or auto (default: ${DEFAULT-VALUE})")
    String device;
    @Option(names = "--no-graph", description = "issue every op from the host instead of replaying a captured step")
    boolean noGraph;
    @Option(names = "--profile-steps", defaultValue = "3",
            description = "steps profiled op by op after the timed ones, on GPUs (default: ${DEFAULT-VALUE}; 0: none)")
    int profileSteps;

    @Option(names = "--stash", defaultValue = "keep",
            description = "stash policy: keep, dsq, or a fixed format such as bfp4 (default: ${DEFAULT-VALUE}); dsq runs its stages over warmup + timed steps, the ledger is of the last")
    String stash;
    @Option(names = "--stash-config", description = "a stash policy file (see frugal train --stash-config); overrides --stash")
    Path stashConfig;
    @Option(names = "--fit-memory", paramLabel = "GIB",
            description = "also find the largest batch (at --seq, with this stash policy) whose step fits in GIB, as the backend counts what it allocates")
    Double fitMemory;

    @Override
    public void run() {
        ModelConfig config = Preset.byName(preset).model().apply(vocab);
        try (ProfilingBackend ops = new ProfilingBackend(Backends.create(device))) {
            boolean gpu = ops.name().startsWith("cuda");
            // On the CPU, synchronizing after each op costs nothing: the timed steps are also the profiled ones.
            ops.setEnabled(!gpu);
            Transformer model = new Transformer(config, ops);
            Init.initialize(model, ops, 1);
            AdamW optimizer = new AdamW(ops, model.params(), 0.9f, 0.95f, 1e-8f, 0.1f);
            Context ctx = Context.of(ops, new StashOptions(stash, stashConfig).policy(warmup + steps), 1);
            int rows = batch * seq;
            long params = model.params().count();
            Random rng = new Random(1);
            double[] millis = new double[steps];
            System.out.printf("bench: %s (%,d parameters), batch %d × seq %d, %s, %d threads%s%n", preset, params,
                    batch, seq, ops.name(), Runtime.getRuntime().availableProcessors(), gpu && !noGraph ? ", CUDA graph" : "");
            try (TrainStep step = new TrainStep(model, optimizer, ops, ctx, batch, seq, 1f, gpu && !noGraph)) {
                double loss = 0;
                for (int s = -warmup; s < steps; s++) {
                    if (s == 0) ops.reset();
                    int[] in = rng.ints(rows, 0, config.vocabSize()).toArray(), tg = rng.ints(rows, 0, config.vocabSize()).toArray();
                    long t0 = System.nanoTime();
                    ctx.stash().beginStep(s + warmup + 1);
                    loss = step.run(in, tg, 3e-4f);
                    if (s >= 0) millis[s] = (System.nanoTime() - t0) / 1e6;
                }
                double[] sorted = millis.clone();
                Arrays.sort(sorted);
                double median = sorted[steps / 2];
                double tokensPerSecond = rows / (median / 1e3);
                System.out.printf("step: median %.2f ms (min %.2f, max %.2f) over %d steps%s; %,.0f tokens/s; last loss %.4f%n",
                        median, sorted[0], sorted[steps - 1], steps, step.replaying() ? " (graph replay)" : "", tokensPerSecond, loss);
                System.out.printf("model FLOPs 6·N·tokens/s = %.1f TFLOP/s; MFU %.1f%% of an H100's %.0f TFLOP/s bf16%n",
                        6.0 * params * tokensPerSecond / 1e12, 100 * 6.0 * params * tokensPerSecond / H100_BF16_FLOPS, H100_BF16_FLOPS / 1e12);
                System.out.printf("%s: peak %s allocated by the backend (weights %s incl. compute copies, activations and "
                                + "gradients %s)%n", gpu ? "device memory" : "memory", size(ops.peakMemory()),
                        size(params * 4 + model.params().computeBytes()), size(ctx.buffers().bytes()));
                printLedger(ctx.stash(), rows);
                System.out.printf("memory traffic of every op of the step (what each must read and write at its operands' types): "
                        + "%.2f GB/step = %.0f bytes/token%n", step.trafficBytes() / 1e9, (double) step.trafficBytes() / rows);
                if (fitMemory != null) printFit(config);
                if (gpu && profileSteps > 0) {
                    step.setGraphs(false);
                    ops.setEnabled(true);
                    ops.reset();
                    for (int s = 0; s < profileSteps; s++) {
                        step.run(rng.ints(rows, 0, config.vocabSize()).toArray(), rng.ints(rows, 0, config.vocabSize()).toArray(), 3e-4f);
                    }
                    ops.setEnabled(false);
                    printTable(ops, profileSteps, "per-op breakdown, " + profileSteps + " steps issued op by op with a synchronization after each");
                } else if (!gpu) {
                    printTable(ops, steps, "per-op breakdown");
                }
            }
        }
    }

    /** The stash ledger of the last timed step, against a bf16 stash and 16-bit GEMM operands as DSQ compares. */
    private void printLedger(Stash s, int tokens) {
        StashLedger l = s.ledger();
        System.out.println();
        System.out.printf("stash (%s, %s): peak %.1f KiB = %.0f bytes/token; a bf16 stash of the same tensors: %.0f bytes/token (%.2f× more)%n",
                stashConfig != null ? stashConfig : stash, s.policy().describeStage(), l.peakHeld() / 1024.0, (double) l.peakHeld() / tokens,
                (double) l.peakHeldBf16() / tokens, (double) l.peakHeldBf16() / l.peakHeld());
        System.out.printf("traffic of stash, gradients and GEMM operands: %.0f bytes/token (16-bit: %.0f, %.2f× more); "
                        + "bit-weighted GEMM ops: %.3g/token (16-bit: %.3g, %.2f× more)%n",
                (double) l.trafficBytes() / tokens, (double) l.trafficBytes16() / tokens, (double) l.trafficBytes16() / l.trafficBytes(),
                l.bitWeightedOps() / tokens, l.bitWeightedOps16() / tokens, l.bitWeightedOps16() / l.bitWeightedOps());
        System.out.println();
        System.out.println("| stash kind | written bytes/token | read bytes/token | bf16 bytes/token |");
        System.out.println("|---|---:|---:|---:|");
        for (Map.Entry<StashKind, StashLedger.KindBytes> e : l.kinds().entrySet()) {
            StashLedger.KindBytes k = e.getValue();
            System.out.printf("| %s | %.0f | %.0f | %.0f |%n", e.getKey().key(), (double) k.written / tokens,
                    (double) k.read / tokens, (double) k.bf16Written / tokens);
        }
    }

    private void printFit(ModelConfig config) {
        long budget = (long) (fitMemory * 1073741824.0);
        StashOptions options = new StashOptions(stash, stashConfig);
        LargestBatch.Fit fit = new LargestBatch(device, config, seq, options::policy).within(budget);
        System.out.println();
        System.out.printf("largest batch within %s at seq %d: %d (peak %s); batch %d needs %s%n", size(budget), seq,
                fit.fits().batch(), size(fit.fits().peakBytes()), fit.exceeds().batch(), size(fit.exceeds().peakBytes()));
    }

    /** GiB with two decimals, or MiB with one below a GiB (the tiny model's whole step is a fraction of one). */
    private static String size(long bytes) {
        return bytes >= 1L << 30 ? String.format("%.2f GiB", bytes / 1073741824.0) : String.format("%.1f MiB", bytes / 1048576.0);
    }

    private static void printTable(ProfilingBackend ops, int steps, String title) {
        double flopsPerStep = 0;
        for (ProfilingBackend.OpStats st : ops.stats().values()) flopsPerStep += st.flops / steps;
        double total = ops.stats().values().stream().mapToDouble(st -> st.nanos).sum() / steps / 1e6;
        System.out.println();
        System.out.printf("%s: %.2f ms/step summed over ops, %.1f GFLOP/step (matmul + attention)%n", title, total, flopsPerStep / 1e9);
        System.out.println();
        System.out.println("| op | calls/step | ms/step | share | GFLOP/s | MB/step | GB/s |");
        System.out.println("|---|---:|---:|---:|---:|---:|---:|");
        List<Map.Entry<String, ProfilingBackend.OpStats>> entries = new ArrayList<>(ops.stats().entrySet());
        entries.sort((a, b) -> Long.compare(b.getValue().nanos, a.getValue().nanos));
        for (Map.Entry<String, ProfilingBackend.OpStats> e : entries) {
            ProfilingBackend.OpStats st = e.getValue();
            double ms = st.nanos / 1e6 / steps;
            System.out.printf("| %s | %d | %.2f | %.1f%% | %s | %.1f | %.1f |%n", e.getKey(), st.calls / steps, ms, 100 * ms / total,
                    st.flops > 0 ? String.format("%.1f", st.flops / (st.nanos / 1e9) / 1e9) : "", st.bytes / 1e6 / steps,
                    st.bytes / (st.nanos / 1e9) / 1e9);
        }
        long bytes = ops.stats().values().stream().mapToLong(st -> st.bytes).sum() / steps;
        System.out.printf("| (sum of ops) | | %.2f | | | %.1f | |%n", total, bytes / 1e6);
    }
}
