package frugal.cli;

import frugal.backend.Backends;
import frugal.backend.ProfilingBackend;
import frugal.model.Init;
import frugal.model.ModelConfig;
import frugal.model.Transformer;
import frugal.nn.Context;
import frugal.tensor.DType;
import frugal.tensor.Tensor;
import frugal.train.AdamW;
import frugal.train.Preset;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;

/** {@code frugal bench}: times whole training steps and breaks them down per op. */
@Command(name = "bench", mixinStandardHelpOptions = true,
        description = "Time full training steps (forward, backward, AdamW) with a per-op breakdown.")
final class BenchCommand implements Runnable {
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

    @Override
    public void run() {
        ModelConfig config = Preset.byName(preset).model().apply(vocab);
        try (ProfilingBackend ops = new ProfilingBackend(Backends.create(device))) {
            Transformer model = new Transformer(config, ops);
            Init.initialize(model, ops, 1);
            AdamW optimizer = new AdamW(ops, model.params(), 0.9f, 0.95f, 1e-8f, 0.1f);
            Context ctx = Context.of(ops);
            int rows = batch * seq;
            Tensor ids = ops.allocate(DType.I32, rows), targets = ops.allocate(DType.I32, rows), losses = ops.allocate(DType.F32, rows);
            Random rng = new Random();
            double[] millis = new double[steps];
            System.out.printf("bench: %s (%,d parameters), batch %d × seq %d, %s, %d threads%n", preset, model.params().count(),
                    batch, seq, ops.name(), Runtime.getRuntime().availableProcessors());
            for (int s = -warmup; s < steps; s++) {
                if (s == 0) ops.reset();
                ops.upload(ids, MemorySegment.ofArray(rng.ints(rows, 0, config.vocabSize()).toArray()));
                ops.upload(targets, MemorySegment.ofArray(rng.ints(rows, 0, config.vocabSize()).toArray()));
                long t0 = System.nanoTime();
                model.params().zeroGrad();
                model.forward(ctx, ids, targets, losses, batch, seq, 1f / rows);
                model.backward(ctx, batch, seq);
                optimizer.step(3e-4f, 1f);
                ops.synchronize();
                if (s >= 0) millis[s] = (System.nanoTime() - t0) / 1e6;
            }
            double[] sorted = millis.clone();
            Arrays.sort(sorted);
            double median = sorted[steps / 2];
            double flopsPerStep = 0;
            for (ProfilingBackend.OpStats st : ops.stats().values()) flopsPerStep += st.flops / steps;
            System.out.printf("step: median %.1f ms (min %.1f, max %.1f) over %d steps; %,.0f tokens/s; %.1f GFLOP/step, %.1f GFLOP/s overall%n",
                    median, sorted[0], sorted[steps - 1], steps, rows / (median / 1e3), flopsPerStep / 1e9, flopsPerStep / median / 1e6);
            System.out.println();
            System.out.println("| op | calls/step | ms/step | share | GFLOP/s |");
            System.out.println("|---|---:|---:|---:|---:|");
            double total = ops.stats().values().stream().mapToDouble(st -> st.nanos).sum() / steps / 1e6;
            List<Map.Entry<String, ProfilingBackend.OpStats>> entries = new ArrayList<>(ops.stats().entrySet());
            entries.sort((a, b) -> Long.compare(b.getValue().nanos, a.getValue().nanos));
            for (Map.Entry<String, ProfilingBackend.OpStats> e : entries) {
                ProfilingBackend.OpStats st = e.getValue();
                double ms = st.nanos / 1e6 / steps;
                System.out.printf("| %s | %d | %.1f | %.1f%% | %s |%n", e.getKey(), st.calls / steps, ms, 100 * ms / total,
                        st.flops > 0 ? String.format("%.1f", st.flops / (st.nanos / 1e9) / 1e9) : "");
            }
            System.out.printf("| (sum of ops) | | %.1f | | |%n", total);
        }
    }
}
