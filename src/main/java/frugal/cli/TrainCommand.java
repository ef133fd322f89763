package frugal.cli;

import frugal.train.StashOptions;
import frugal.train.TrainOptions;
import frugal.train.TrainSettings;
import frugal.train.Trainer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Path;

/**
 * {@code frugal train}: with no arguments, the tiny preset on the JDK's own src.zip. Settings left unset come
 * from the checkpoint when resuming, else from the preset or the defaults named in the help.
 */
@Command(name = "train", mixinStandardHelpOptions = true,
        description = "Train a GPT-2 or Llama model (default: the tiny preset on the JDK's lib/src.zip).")
final class TrainCommand implements Runnable {
    @Option(names = "--preset", defaultValue = "tiny", description = "tiny, llama-tiny or gpt2-124m (default: ${DEFAULT-VALUE})")
    String preset;
    @Option(names = "--model", description = "fine-tune a Hugging Face folder (config.json + model.safetensors)")
    Path model;
    @Option(names = "--config", description = "start a fresh model from a Hugging Face config.json")
    Path config;
    @Option(names = "--data", description = "text file, folder, .zip or token file (default: the JDK's lib/src.zip)")
    Path data;
    @Option(names = "--tokenizer", description = "gpt2 (BPE) or byte (default: the preset's)")
    String tokenizer;
    @Option(names = "--max-bytes", description = "read at most this much text, 0 = all (default: the preset's)")
    Long maxBytes;
    @Option(names = {"-b", "--batch"}, description = "sequences per micro-batch (default: the preset's)")
    Integer batch;
    @Option(names = {"-t", "--seq"}, description = "sequence length (default: the preset's)")
    Integer seq;
    @Option(names = {"-n", "--steps"}, description = "optimizer steps (default: the preset's)")
    Integer steps;
    @Option(names = "--accumulation", description = "micro-batches per step (default: " + TrainSettings.DEFAULT_ACCUMULATION + ")")
    Integer accumulation;
    @Option(names = "--lr", description = "peak learning rate (default: the preset's)")
    Float lr;
    @Option(names = "--min-lr-ratio", description = "final rate as a fraction of the peak (default: " + TrainSettings.DEFAULT_MIN_LR_RATIO + ")")
    Float minLrRatio;
    @Option(names = "--warmup", description = "linear warmup steps (default: the preset's, at most a tenth of the steps)")
    Integer warmup;
    @Option(names = "--weight-decay", description = "decoupled weight decay on 2-D tensors (default: " + TrainSettings.DEFAULT_WEIGHT_DECAY + ")")
    Float weightDecay;
    @Option(names = "--clip", description = "global gradient-norm clip, 0 = off (default: " + TrainSettings.DEFAULT_CLIP + ")")
    Float clip;
    @Option(names = "--eval-interval", description = "steps between validation evaluations (default: the preset's)")
    Integer evalInterval;
    @Option(names = "--eval-batches", defaultValue = "8", description = "validation batches per evaluation (default: ${DEFAULT-VALUE})")
    int evalBatches;
    @Option(names = "--seed", description = "seed for initialization, data order and the sample (default: " + TrainSettings.DEFAULT_SEED + ")")
    Long seed;
    @Option(names = {"-o", "--out"}, defaultValue = "runs/latest", description = "output folder (default: ${DEFAULT-VALUE})")
    Path out;
    @Option(names = "--resume", description = "continue from <out>/checkpoint.safetensors with the settings stored there")
    boolean resume;
    @Option(names = "--checkpoint-interval", defaultValue = "100", description = "steps between checkpoints (default: ${DEFAULT-VALUE}; also at the end)")
    int checkpointInterval;
    @Option(names = "--stop-after", description = "end this session after this step (with a checkpoint), to continue later with --resume")
    Integer stopAfter;
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
                checkpointInterval, stopAfter, sampleTokens, device, !noProgress);
        new Trainer(options, System.out).withStash(new StashOptions(stash, stashConfig)).run();
    }
}
