package frugal.train;

import com.fasterxml.jackson.databind.node.ObjectNode;
import frugal.FrugalException;
import frugal.backend.Backend;
import frugal.backend.Backends;
import frugal.data.Batches;
import frugal.data.Tokenizer;
import frugal.data.Tokenizers;
import frugal.io.AtomicFile;
import frugal.model.Init;
import frugal.model.ModelConfig;
import frugal.model.ModelFiles;
import frugal.model.Transformer;
import frugal.nn.Context;
import frugal.stash.StashPolicy;
import frugal.tensor.DType;
import frugal.tensor.Tensor;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;

import java.io.IOException;
import java.io.PrintStream;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

/**
 * The training loop: batches → forward → backward → AdamW, with evaluation, metrics, checkpoints and
 * exact resumption (the data position and optimizer state travel in the checkpoint).
 */
public final class Trainer {
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

    /** What a finished run reports. */
    public record Summary(int steps, double lastLoss, double valLoss, Path checkpoint) {
    }

    public Summary run() {
        Preset preset = Preset.byName(o.preset());
        Path out = o.out();
        Path checkpointFile = out.resolve(Checkpoint.FILE), tokenizerFile = out.resolve("model").resolve("tokenizer.txt");
        Checkpoint.Loaded resumed = null;
        if (o.resume()) {
            if (!Files.exists(checkpointFile)) throw new FrugalException(checkpointFile + ": no checkpoint to --resume from");
            resumed = Checkpoint.read(checkpointFile);
        }
        Map<String, String> saved = resumed != null ? resumed.state() : Map.of();
        Tokenizer tokenizer = saved.containsKey("tokenizer") ? resumed.parse("tokenizer", Tokenizers::byName) : Tokenizers.byName(o.tokenizer());
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
        int batch = saved.containsKey("batch") ? resumed.parse("batch", Integer::parseInt) : o.batch() != null ? o.batch() : preset.batch();
        int seq = saved.containsKey("seq") ? resumed.parse("seq", Integer::parseInt) : o.seq() != null ? o.seq() : preset.seq();
        long seed = saved.containsKey("seed") ? resumed.parse("seed", Long::parseLong) : o.seed();
        Batches.State position = resumed != null ? resumed.parse("data", Batches.State::parse) : null;
        int steps = o.steps() != null ? o.steps() : preset.steps();
        float lr = o.lr() != null ? o.lr() : preset.lr();
        int warmup = o.warmup() != null ? o.warmup() : Math.min(preset.warmup(), steps / 10);
        int evalInterval = o.evalInterval() != null ? o.evalInterval() : preset.evalInterval();
        if (batch <= 0 || seq <= 0 || steps <= 0 || o.accumulation() <= 0 || evalInterval <= 0) {
            throw new FrugalException("batch, sequence length, steps, accumulation and evaluation interval must be positive");
        }
        if (!(lr >= 0 && Float.isFinite(lr))) throw new FrugalException("--lr " + lr + ": the learning rate must be a finite number ≥ 0");
        config.checkSequence(seq, configSource);

        Batches data = Batches.load(o.data(), tokenizer, o.maxBytes(), batch, seq, seed, log);
        LrSchedule schedule = new LrSchedule(lr, lr * o.minLrRatio(), warmup, steps);
        try (Backend ops = Backends.create(o.device())) {
            Transformer model = new Transformer(config, ops);
            if (o.model() != null && resumed == null) ModelFiles.loadWeights(model, o.model(), ops);
            else Init.initialize(model, ops, seed);
            AdamW optimizer = new AdamW(ops, model.params(), 0.9f, 0.95f, 1e-8f, o.weightDecay());
            int firstStep = 1;
            // The step of the checkpoint on disk that belongs to this run (0: none yet), for the divergence message.
            int savedStep = 0;
            if (resumed != null) {
                Checkpoint.restore(resumed, model, optimizer, ops);
                try {
                    data.restore(position);
                } catch (FrugalException e) {
                    throw new FrugalException(checkpointFile + ": " + e.getMessage(), e);
                }
                firstStep = resumed.step() + 1;
                savedStep = resumed.step();
            }
            log.printf("model %s: %,d parameters, %d layers × %d wide; %s tokenizer; batch %d × %d × %d accumulation; %s%n",
                    config.family().name().toLowerCase(), model.params().count(), config.layers(), config.dim(),
                    tokenizer.name(), batch, seq, o.accumulation(), ops.name());
            StashPolicy stashPolicy = saved.containsKey(STASH_POLICY) ? StashPolicy.parse(saved.get(STASH_POLICY), steps) : stash.policy(steps);
            if (saved.containsKey(STASH_SCHEDULE)) stashPolicy.schedule().restore(saved.get(STASH_SCHEDULE));
            if (stashPolicy.quantizes()) log.printf("stash: %d stage(s) of quantization points [q0, q1, q2, q3]%n", stashPolicy.schedule().stages());
            Context ctx = Context.of(ops, stashPolicy, seed);
            int rows = batch * seq;
            Tensor ids = ops.allocate(DType.I32, rows), targets = ops.allocate(DType.I32, rows), losses = ops.allocate(DType.F32, rows);
            int[] in = new int[rows], tg = new int[rows];
            float[] hostLosses = new float[rows];
            Evaluator evaluator = new Evaluator(model, ops);
            double loss = Double.NaN, valLoss = Double.NaN;
            try (Metrics metrics = new Metrics(out.resolve("metrics.jsonl"), resumed != null);
                 ProgressBar bar = progressBar(steps, firstStep - 1)) {
                for (int step = firstStep; step <= steps; step++) {
                    long start = System.nanoTime();
                    float rate = schedule.at(step);
                    int stage = stashPolicy.stage();
                    ctx.stash().beginStep(step);
                    if (stashPolicy.quantizes() && (step == firstStep || stashPolicy.stage() != stage)) {
                        log.printf("step %d: stash %s%n", step, stashPolicy.describeStage());
                    }
                    model.params().zeroGrad();
                    loss = 0;
                    for (int micro = 0; micro < o.accumulation(); micro++) {
                        data.nextTrain(in, tg);
                        ops.upload(ids, MemorySegment.ofArray(in));
                        ops.upload(targets, MemorySegment.ofArray(tg));
                        model.forward(ctx, ids, targets, losses, batch, seq, 1f / (rows * o.accumulation()));
                        ops.download(losses, MemorySegment.ofArray(hostLosses));
                        double sum = 0;
                        for (float l : hostLosses) sum += l;
                        loss += sum / rows / o.accumulation();
                        if (!Double.isFinite(loss)) throw diverged(step, "the loss", loss, checkpointFile, savedStep);
                        model.backward(ctx, batch, seq);
                    }
                    float gradNorm = optimizer.step(rate, o.clip());
                    if (!Float.isFinite(gradNorm)) throw diverged(step, "the gradient norm", gradNorm, checkpointFile, savedStep);
                    stashPolicy.schedule().observe(step, loss);
                    double seconds = (System.nanoTime() - start) / 1e9;
                    double tokensPerSecond = rows * o.accumulation() / seconds;
                    ObjectNode record = metrics.record().put("step", step).put("loss", loss).put("lr", rate)
                            .put("grad_norm", gradNorm).put("tokens_per_s", tokensPerSecond).put("ms", seconds * 1e3);
                    StashMetrics.put(record, ctx.stash(), rows, o.accumulation());
                    if (step % evalInterval == 0 || step == steps) {
                        valLoss = evaluator.evaluate(data.validation(), batch, seq, o.evalBatches() * batch).loss();
                        record.put("val_loss", valLoss);
                    }
                    metrics.write(record);
                    if (bar != null) {
                        bar.stepTo(step);
                        bar.setExtraMessage(String.format(" loss %.4f  %,.0f tok/s", loss, tokensPerSecond));
                    } else if (step % 10 == 0 || step == steps) {
                        log.printf("step %d/%d  loss %.4f  %,.0f tok/s%n", step, steps, loss, tokensPerSecond);
                    }
                    if ((o.checkpointInterval() > 0 && step % o.checkpointInterval() == 0) || step == steps) {
                        Map<String, String> state = new HashMap<>();
                        state.put("tokenizer", tokenizer.name());
                        state.put("batch", Integer.toString(batch));
                        state.put("seq", Integer.toString(seq));
                        state.put("seed", Long.toString(seed));
                        state.put("data", data.state());
                        state.put(STASH_POLICY, stashPolicy.text());
                        state.put(STASH_SCHEDULE, stashPolicy.schedule().state());
                        Checkpoint.save(checkpointFile, model, optimizer, ops, state);
                        savedStep = step;
                    }
                }
            }
            if (Double.isFinite(valLoss)) log.printf("eval loss %.4f (perplexity %.2f)%n", valLoss, Math.exp(valLoss));
            ModelFiles.save(model, ops, out.resolve("model"));
            Files.writeString(tokenizerFile, tokenizer.name() + "\n");
            if (o.sampleTokens() > 0) {
                log.println("sample:");
                int[] prompt = {tokenizer.endOfText()};
                new Generator(model, ops).generate(prompt, o.sampleTokens(), 0.8f, 40, seed,
                        t -> log.print(tokenizer.decode(new int[]{t})));
                log.println();
            }
            return new Summary(steps, loss, valLoss, checkpointFile);
        } catch (IOException e) {
            throw new FrugalException(tokenizerFile + ": cannot write: " + AtomicFile.describe(e), e);
        }
    }

    private static FrugalException diverged(int step, String what, double value, Path checkpointFile, int savedStep) {
        return new FrugalException("step " + step + ": " + what + " is " + value + " (training diverged); "
                + (savedStep > 0 ? checkpointFile + " (step " + savedStep + ") is intact" : "this run saved no checkpoint")
                + ". Try a lower --lr or --clip.");
    }

    private ProgressBar progressBar(int steps, int done) {
        if (!o.progressBar()) return null;
        ProgressBar bar = new ProgressBarBuilder().setTaskName("train").setInitialMax(steps)
                .setStyle(ProgressBarStyle.ASCII).setUpdateIntervalMillis(500).showSpeed().build();
        bar.stepTo(done);
        return bar;
    }
}
