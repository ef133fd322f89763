package frugal.train;

import java.nio.file.Path;

/**
 * Everything a training run is configured by, as given on the command line: a null setting was not given and
 * is resolved by {@link TrainSettings} (from the checkpoint when resuming, else the preset or the default).
 * {@code model} fine-tunes a Hugging Face folder, {@code config} starts a fresh model from a config.json,
 * otherwise the preset's shape is used. {@code stopAfter} ends this session early, after that step's
 * checkpoint, for a later {@code resume}.
 */
public record TrainOptions(String preset, Path model, Path config, Path data, String tokenizer, Long maxBytes,
                           Integer batch, Integer seq, Integer steps, Integer accumulation, Float lr, Float minLrRatio,
                           Integer warmup, Float weightDecay, Float clip, Integer evalInterval, int evalBatches,
                           Long seed, Path out, boolean resume, int checkpointInterval, Integer stopAfter,
                           int sampleTokens, String device, boolean progressBar) {
}
