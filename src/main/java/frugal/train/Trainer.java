package frugal.train;

import com.fasterxml.jackson.databind.node.ObjectNode;
import frugal.FrugalException;
import frugal.backend.Backend;
import frugal.backend.Backends;
import frugal.data.Batches;
import frugal.data.Tokenizer;
import frugal.data.Tokenizers;
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
        Path checkpointFile = out.resolve(Checkpoint.FILE);
        Checkpoint.Loaded resumed = null;
        if (o.resume()) {
            if (!Files.exists(checkpointFile)) throw new FrugalException("--resume: no checkpoint at " + checkpointFile);
            resumed = Checkpoint.read(checkpointFile);
        }
        Map<String, String> saved = resumed != null ? resumed.state() : Map.of();
        String tokenizerName = saved.getOrDefault("tokenizer", o.tokenizer());
        Tokenizer tokenizer = Tokenizers.byName(tokenizerName);
        ModelConfig config = resumed != null ? resumed.config()
                : o.model() != null ? ModelFiles.readConfig(o.model())
                : o.config() != null ? ModelFiles.readConfig(o.config())
                : preset.model().apply(tokenizer.vocabSize());
        if (config.vocabSize() < tokenizer.vocabSize()) {
            throw new FrugalException("the model's vocabulary (" + config.vocabSize() + ") is smaller than the "
                    + tokenizer.name() + " tokenizer's (" + tokenizer.vocabSize() + ")");
        }
        int batch = intOption(saved, "batch", o.batch(), preset.batch());
        int seq = intOption(saved, "seq", o.seq(), preset.seq());
        int steps = o.steps() != null ? o.steps() : preset.steps();
        float lr = o.lr() != null ? o.lr() : preset.lr();
        int warmup = o.warmup() != null ? o.warmup() : Math.min(preset.warmup(), steps / 10);
        int evalInterval = o.evalInterval() != null ? o.evalInterval() : preset.evalInterval();
        long seed = saved.containsKey("seed") ? Long.parseLong(saved.get("seed")) : o.seed();
        if (seq > config.maxSeq()) {
            throw new FrugalException("sequence length " + seq + " is longer than the model's " + config.maxSeq() + " positions");
        }
        if (batch <= 0 || seq <= 0 || steps <= 0 || o.accumulation() <= 0) {
            throw new FrugalException("batch, sequence length, steps and accumulation must be positive");
        }

        Batches data = Batches.load(o.data(), tokenizer, o.maxBytes(), batch, seq, seed, log);
        LrSchedule schedule = new LrSchedule(lr, lr * o.minLrRatio(), warmup, steps);
        try (Backend ops = Backends.create(o.device())) {
            Transformer model = new Transformer(config, ops);
            if (o.model() != null && resumed == null) ModelFiles.loadWeights(model, o.model(), ops);
            else Init.initialize(model, ops, seed);
            AdamW optimizer = new AdamW(ops, model.params(), 0.9f, 0.95f, 1e-8f, o.weightDecay());
            int firstStep = 1;
            if (resumed != null) {
                Checkpoint.restore(checkpointFile, model, optimizer, ops);
                data.restore(saved.get("data"));
                firstStep = resumed.step() + 1;
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
                        if (!Double.isFinite(loss)) {
                            throw new FrugalException("step " + step + ": the loss is " + loss + " (training diverged); "
                                    + (Files.exists(checkpointFile) ? "the last checkpoint " + checkpointFile + " is intact"
                                    : "no checkpoint was written") + ". Try a lower --lr or --clip.");
                        }
                        model.backward(ctx, batch, seq);
                    }
                    float gradNorm = optimizer.step(rate, o.clip());
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
                    }
                }
            }
            if (Double.isFinite(valLoss)) log.printf("eval loss %.4f (perplexity %.2f)%n", valLoss, Math.exp(valLoss));
            ModelFiles.save(model, ops, out.resolve("model"));
            Files.writeString(out.resolve("model").resolve("tokenizer.txt"), tokenizer.name() + "\n");
            if (o.sampleTokens() > 0) {
                log.println("sample:");
                int[] prompt = {tokenizer.endOfText()};
                new Generator(model, ops).generate(prompt, o.sampleTokens(), 0.8f, 40, seed,
                        t -> log.print(tokenizer.decode(new int[]{t})));
                log.println();
            }
            return new Summary(steps, loss, valLoss, checkpointFile);
        } catch (java.io.IOException e) {
            throw new FrugalException("cannot write into " + out + ": " + e.getMessage(), e);
        }
    }

    private static int intOption(Map<String, String> saved, String key, Integer given, int preset) {
        if (saved.containsKey(key)) return Integer.parseInt(saved.get(key));
        return given != null ? given : preset;
    }

    private ProgressBar progressBar(int steps, int done) {
        if (!o.progressBar()) return null;
        ProgressBar bar = new ProgressBarBuilder().setTaskName("train").setInitialMax(steps)
                .setStyle(ProgressBarStyle.ASCII).setUpdateIntervalMillis(500).showSpeed().build();
        bar.stepTo(done);
        return bar;
    }
}
