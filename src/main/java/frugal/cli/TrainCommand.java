package frugal.cli;

import frugal.train.StashOptions;
import frugal.train.TrainOptions;
import frugal.train.Trainer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Path;

/** {@code frugal train}: with no arguments, the tiny preset on the JDK's own src.zip. */
@Command(name = "train", mixinStandardHelpOptions = true,
        description = "Train a GPT-2 or Llama model (default: the tiny preset on the JDK's lib/src.zip).")
final class TrainCommand implements Runnable {
    @Option(names = "--preset", defaultValue = "tiny", description = "tiny, llama-tiny or gpt2-124m (default: ${DEFAULT-VALUE})")
    String preset;
    @Option(names = "--model", description = "fine-tune a Hugging Face folder (config.json + model.safetensors)")
    Path model;
    @Option(names = "--config", description = "start a fresh model from a Hugging Face config.json")
    Path config;
    @Option(names = "--data", description = "text file, folder or .zip (default: the JDK's lib/src.zip)")
    Path data;
    @Option(names = "--tokenizer", defaultValue = "gpt2", description = "gpt2 (BPE) or byte (default: ${DEFAULT-VALUE})")
    String tokenizer;
    @Option(names = "--max-bytes", defaultValue = "8000000", description = "read at most this much text (default: ${DEFAULT-VALUE}; 0 = all)")
    long maxBytes;
    @Option(names = {"-b", "--batch"}, description = "sequences per micro-batch")
    Integer batch;
    @Option(names = {"-t", "--seq"}, description = "sequence length")
    Integer seq;
    @Option(names = {"-n", "--steps"}, description = "optimizer steps")
    Integer steps;
    @Option(names = "--accumulation", defaultValue = "1", description = "micro-batches per step (default: ${DEFAULT-VALUE})")
    int accumulation;
    @Option(names = "--lr", description = "peak learning rate")
    Float lr;
    @Option(names = "--min-lr-ratio", defaultValue = "0.1", description = "final rate as a fraction of the peak (default: ${DEFAULT-VALUE})")
    float minLrRatio;
    @Option(names = "--warmup", description = "linear warmup steps")
    Integer warmup;
    @Option(names = "--weight-decay", defaultValue = "0.1", description = "decoupled weight decay on 2-D tensors (default: ${DEFAULT-VALUE})")
    float weightDecay;
    @Option(names = "--clip", defaultValue = "1.0", description = "global gradient-norm clip, 0 = off (default: ${DEFAULT-VALUE})")
    float clip;
    @Option(names = "--eval-interval", description = "steps between validation evaluations")
    Integer evalInterval;
    @Option(names = "--eval-batches", defaultValue = "8", description = "validation batches per evaluation (default: ${DEFAULT-VALUE})")
    int evalBatches;
    @Option(names = "--seed", defaultValue = "1337", description = "seed for initialization and data order (default: ${DEFAULT-VALUE})")
    long seed;
    @Option(names = {"-o", "--out"}, defaultValue = "runs/latest", description = "output folder (default: ${DEFAULT-VALUE})")
    Path out;
    @Option(names = "--resume", description = "continue from <out>/checkpoint.safetensors")
    boolean resume;
    @Option(names = "--checkpoint-interval", defaultValue = "100", description = "steps between checkpoints (default: ${DEFAULT-VALUE}; also at the end)")
    int checkpointInterval;
    @Option(names = "--sample-tokens", defaultValue = "120", description = "tokens to sample at the end (default: ${DEFAULT-VALUE})")
    int sampleTokens;
    @Option(names = "--device", defaultValue = "auto", description = "cpu, cuda or auto (default: ${DEFAULT-VALUE})")
    String device;
    @Option(names = "--stash", defaultValue = "keep",
            description = "tensors saved for backward: keep, dsq (time-adaptive), or a fixed format bfpN/intN[/block[/sr]], N = 2..8 (default: ${DEFAULT-VALUE})")
    String stash;
    @Option(names = "--stash-config", description = "a stash policy file (formats per point q0-q3 and per tensor kind, stages); overrides --stash")
    Path stashConfig;
    @Option(names = "--no-progress", description = "print a line every 10 steps instead of a progress bar")
    boolean noProgress;

    @Override
    public void run() {
        TrainOptions options = new TrainOptions(preset, model, config, data, tokenizer, maxBytes, batch, seq, steps,
                accumulation, lr, minLrRatio, warmup, weightDecay, clip, evalInterval, evalBatches, seed, out, resume,
                checkpointInterval, sampleTokens, device, !noProgress);
        Trainer.Summary s = new Trainer(options, System.out).withStash(new StashOptions(stash, stashConfig)).run();
        System.out.printf("done: %d steps, checkpoint %s, model %s%n", s.steps(), s.checkpoint(), out.resolve("model"));
    }
}
