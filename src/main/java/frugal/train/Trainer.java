package frugal.train;

import com.fasterxml.jackson.databind.node.ObjectNode;
import frugal.FrugalException;
import frugal.backend.Backend;
import frugal.backend.Backends;
import frugal.backend.ProfilingBackend;
import frugal.data.Batches;
import frugal.data.StreamDecoder;
import frugal.data.Tokenizer;
import frugal.data.Tokenizers;
import frugal.io.AtomicFile;
import frugal.model.Init;
import frugal.model.ModelConfig;
import frugal.model.ModelFiles;
import frugal.model.Transformer;
import frugal.nn.Context;
import frugal.stash.StashPolicy;
import me.tongfei.progressbar.ConsoleProgressBarConsumer;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * The training loop: batches → {@link TrainStep} (forward, backward, AdamW; a replayed CUDA graph on GPUs) with
 * evaluation, metrics, checkpoints and exact resumption. Everything a step depends on is in the checkpoint: the
 * weights, AdamW's moments and step count (which also fixes the learning rate), the settings, and the data
 * position — the only randomness in training is the data order, drawn from (seed, epoch) — so a resumed run
 * computes bit for bit what the uninterrupted one would have.
 */
public final class Trainer {
    /** Steps over which the tok/s shown in the progress bar is averaged. */
    private static final int RATE_WINDOW = 20;
    /** Checkpoint state key of the data loader's position (the settings use their flags' names). */
    private static final String DATA_POSITION = "data-position";
    private static final String STASH_POLICY = "stash.policy";
    private static final String STASH_SCHEDULE = "stash.schedule";
    private final TrainOptions o;
    private final PrintStream log;
    private StashOptions stash = StashOptions.KEEP;

    public Trainer(TrainOptions options, PrintStream log) {
        this.o = options;
        this.log = log;
    }

    /** What the run does with tensors saved for backward (default: keep them at full precision). */
    public Trainer withStash(StashOptions stash) {
        this.stash = stash;
        return this;
    }

    public void run() {
        Preset preset = Preset.byName(o.preset());
        Path out = o.out();
        Path checkpointFile = out.resolve(Checkpoint.FILE);
        Checkpoint.Loaded resumed = null;
        if (o.resume()) {
            if (!Files.exists(checkpointFile)) throw new FrugalException(checkpointFile + ": no checkpoint to --resume from");
            resumed = Checkpoint.read(checkpointFile);
        }
        Map<String, String> saved = resumed != null ? resumed.state() : Map.of();
        List<String> overrides = new ArrayList<>();
        TrainSettings s;
        try {
            s = TrainSettings.resolve(o, preset, saved, overrides);
        } catch (FrugalException e) {
            if (resumed == null) throw e;
            throw new FrugalException(checkpointFile + ": " + e.getMessage(), e);
        }
        if (!overrides.isEmpty()) {
            log.println("note: resuming with " + String.join(", ", overrides) + "; the loss curve will differ from an uninterrupted run's");
        }
        // A saved tokenizer name is parsed through the checkpoint so that a damaged one is reported against its file.
        Tokenizer tokenizer = resumed != null && s.tokenizer().equals(saved.get("tokenizer"))
                ? resumed.parse("tokenizer", Tokenizers::byName) : Tokenizers.byName(s.tokenizer());
        ModelConfig config;
        String configSource;
        if (resumed != null) {
            config = resumed.config();
            configSource = checkpointFile.toString();
        } else if (o.model() != null || o.config() != null) {
            Path given = o.model() != null ? o.model() : o.config();
            config = ModelFiles.readConfig(given);
            configSource = ModelFiles.configFile(given).toString();
        } else {
            config = preset.model().apply(tokenizer.vocabSize());
            configSource = "preset " + preset.name();
        }
        config.checkVocabulary(tokenizer.name(), tokenizer.vocabSize(), configSource);
        if (s.batch() <= 0 || s.seq() <= 0 || s.steps() <= 0 || s.accumulation() <= 0) {
            throw new FrugalException("batch, sequence length, steps and accumulation must be positive");
        }
        if (!(s.lr() >= 0 && Float.isFinite(s.lr()))) {
            throw new FrugalException("--lr " + s.lr() + ": the learning rate must be a finite number ≥ 0");
        }
        config.checkSequence(s.seq(), configSource);
        int evalInterval = o.evalInterval() != null ? o.evalInterval() : preset.evalInterval();
        if (evalInterval <= 0) throw new FrugalException("--eval-interval must be positive, got " + evalInterval);
        int lastStep = o.stopAfter() != null ? Math.min(o.stopAfter(), s.steps()) : s.steps();

        Batches data = Batches.load(s.data(), tokenizer, s.maxBytes(), s.batch(), s.seq(), s.seed(), log);
        LrSchedule schedule = new LrSchedule(s.lr(), s.lr() * s.minLrRatio(), s.warmup(), s.steps());
        try (Backend ops = ProfilingBackend.countingTraffic(Backends.create(o.device()))) {
            Transformer model = new Transformer(config, ops);
            if (o.model() != null && resumed == null) ModelFiles.loadWeights(model, o.model(), ops);
            else Init.initialize(model, ops, s.seed());
            AdamW optimizer = new AdamW(ops, model.params(), 0.9f, 0.95f, 1e-8f, s.weightDecay());
            int firstStep = 1;
            // The step of the checkpoint on disk that belongs to this run (0: none yet), for the divergence message.
            int savedStep = 0;
            if (resumed != null) {
                Checkpoint.restore(resumed, model, optimizer, ops);
                String position = saved.get(DATA_POSITION);
                if (position == null) throw new FrugalException(checkpointFile + ": the data position is missing");
                try {
                    data.restore(position);
                } catch (FrugalException e) {
                    throw new FrugalException(checkpointFile + ": " + e.getMessage(), e);
                }
                firstStep = resumed.step() + 1;
                savedStep = resumed.step();
            }
            if (firstStep > lastStep) {
                log.printf("the checkpoint is at step %d of %d: nothing to train%n", firstStep - 1, s.steps());
                return;
            }
            log.printf("model %s: %,d parameters, %d layers × %d wide; %s tokenizer; batch %d × %d × %d accumulation; %s%n",
                    config.family().name().toLowerCase(), model.params().count(), config.layers(), config.dim(),
                    tokenizer.name(), s.batch(), s.seq(), s.accumulation(), ops.name());
            StashPolicy stashPolicy = saved.containsKey(STASH_POLICY)
                    ? StashPolicy.parse(saved.get(STASH_POLICY), s.steps()) : stash.policy(s.steps());
            if (saved.containsKey(STASH_SCHEDULE)) stashPolicy.schedule().restore(saved.get(STASH_SCHEDULE));
            if (stashPolicy.quantizes()) {
                log.printf("stash: %d stage(s) of quantization points [q0, q1, q2, q3]%n", stashPolicy.schedule().stages());
            }
            Context ctx = Context.of(ops, stashPolicy, s.seed());
            int rows = s.batch() * s.seq();
            int[] in = new int[rows * s.accumulation()], tg = new int[rows * s.accumulation()];
            int[] microIn = new int[rows], microTg = new int[rows];
            Evaluator evaluator = new Evaluator(model, ops);
            RecentRate rate = new RecentRate(RATE_WINDOW);
            double valLoss = Double.NaN;
            boolean graphReplay;
            try (Metrics metrics = new Metrics(out.resolve("metrics.jsonl"), firstStep - 1);
                 TrainStep trainStep = new TrainStep(model, optimizer, ops, ctx, s.batch(), s.seq(),
                         s.accumulation(), s.clip(), true);
                 ProgressBar bar = progressBar(firstStep - 1, lastStep)) {
                for (int step = firstStep; step <= lastStep; step++) {
                    long start = System.nanoTime();
                    float lr = schedule.at(step);
                    int stage = stashPolicy.stage();
                    ctx.stash().beginStep(step);
                    if (stashPolicy.quantizes() && (step == firstStep || stashPolicy.stage() != stage)) {
                        log.printf("step %d: stash %s%n", step, stashPolicy.describeStage());
                    }
                    for (int micro = 0; micro < s.accumulation(); micro++) {
                        data.nextTrain(microIn, microTg);
                        System.arraycopy(microIn, 0, in, micro * rows, rows);
                        System.arraycopy(microTg, 0, tg, micro * rows, rows);
                    }
                    double loss = trainStep.run(in, tg, lr);
                    if (!Double.isFinite(loss)) throw diverged(step, "the loss", loss, checkpointFile, savedStep);
                    float gradNorm = trainStep.gradNorm();
                    if (!Float.isFinite(gradNorm)) throw diverged(step, "the gradient norm", gradNorm, checkpointFile, savedStep);
                    stashPolicy.schedule().observe(step, loss);
                    long nanos = System.nanoTime() - start;
                    long tokens = in.length;
                    rate.add(tokens, nanos);
                    ObjectNode record = metrics.record().put("step", step).put("loss", loss).put("lr", lr)
                            .put("grad_norm", gradNorm).put("tokens_per_s", tokens * 1e9 / nanos).put("ms", nanos / 1e6);
                    StashMetrics.put(record, ctx.stash(), rows, s.accumulation());
                    record.put("peak_memory_bytes", ops.peakMemory());
                    record.put("traffic_all_ops_bytes_per_token", (double) trainStep.trafficBytes() / tokens);
                    if (step % evalInterval == 0 || step == s.steps()) {
                        valLoss = evaluator.evaluate(data.validation(), s.batch(), s.seq(), o.evalBatches() * s.batch()).loss();
                        record.put("val_loss", valLoss);
                    }
                    metrics.write(record);
                    if (bar != null) {
                        bar.stepTo(step);
                        bar.setExtraMessage(String.format(" loss %.3f %,.0f tok/s", loss, rate.perSecond()));
                    } else if (step % 10 == 0 || step == lastStep) {
                        log.printf("step %d/%d  loss %.4f  %,.0f tok/s%n", step, s.steps(), loss, rate.perSecond());
                    }
                    if ((o.checkpointInterval() > 0 && step % o.checkpointInterval() == 0) || step == lastStep) {
                        Map<String, String> state = s.toState();
                        state.put(DATA_POSITION, data.state());
                        state.put(STASH_POLICY, stashPolicy.text());
                        state.put(STASH_SCHEDULE, stashPolicy.schedule().state());
                        Checkpoint.save(checkpointFile, model, optimizer, ops, state);
                        savedStep = step;
                    }
                }
                graphReplay = trainStep.replaying();
            }
            if (Double.isFinite(valLoss)) log.printf("eval loss %.4f (perplexity %.2f)%n", valLoss, Math.exp(valLoss));
            if (lastStep < s.steps()) {
                log.printf("stopped after step %d of %d; checkpoint %s (continue with --resume)%n", lastStep, s.steps(), checkpointFile);
                return;
            }
            Path modelDir = out.resolve("model");
            ModelFiles.save(model, ops, modelDir);
            Files.writeString(modelDir.resolve("tokenizer.txt"), tokenizer.name() + "\n");
            if (o.sampleTokens() > 0) {
                log.println("sample:");
                StreamDecoder text = new StreamDecoder(tokenizer);
                new Generator(model, ops, s.seq()).generate(new int[]{tokenizer.endOfText()}, o.sampleTokens(), 0.8f, 40, s.seed(),
                        t -> log.print(text.next(t)));
                log.println(text.flush());
            }
            log.printf("done: %d steps%s; checkpoint %s, model %s%n", lastStep,
                    graphReplay ? " (replayed as a CUDA graph)" : "", checkpointFile, modelDir);
        } catch (IOException e) {
            throw new FrugalException(out + ": cannot write: " + AtomicFile.describe(e), e);
        }
    }

    private static FrugalException diverged(int step, String what, double value, Path checkpointFile, int savedStep) {
        return new FrugalException("step " + step + ": " + what + " is " + value + " (training diverged); "
                + (savedStep > 0 ? checkpointFile + " (step " + savedStep + ") is intact" : "this run saved no checkpoint")
                + ". Try a lower --lr or --clip.");
    }

    private ProgressBar progressBar(int done, int lastStep) {
        if (!o.progressBar()) return null;
        // startsFrom: the ETA of a resumed session counts only the steps it trains itself.
        return new ProgressBarBuilder().setTaskName("train").setInitialMax(lastStep).startsFrom(done, Duration.ZERO)
                .setStyle(ProgressBarStyle.ASCII).setUpdateIntervalMillis(500)
                .setConsumer(new ConsoleProgressBarConsumer(log)).build();
    }

    /** Tokens per second over the last few steps: the first steps (JIT warm-up, graph capture) soon drop out. */
    private static final class RecentRate {
        private final long[] tokens, nanos;
        private int count;

        RecentRate(int window) {
            tokens = new long[window];
            nanos = new long[window];
        }

        void add(long stepTokens, long stepNanos) {
            tokens[count % tokens.length] = stepTokens;
            nanos[count % nanos.length] = stepNanos;
            count++;
        }

        double perSecond() {
            long t = 0, n = 0;
            for (int i = 0; i < Math.min(count, tokens.length); i++) {
                t += tokens[i];
                n += nanos[i];
            }
            return n == 0 ? 0 : t * 1e9 / n;
        }
    }
}
