package frugal.train;

import java.nio.file.Path;

/**
 * Everything a training run is configured by. Sizes left null take the preset's value; {@code model}
 * fine-tunes a Hugging Face folder, {@code config} starts a fresh model from a config.json, otherwise
 * the preset's shape is used.
 */
public record TrainOptions(String preset, Path model, Path config, Path data, String tokenizer, long maxBytes,
                           Integer batch, Integer seq, Integer steps, int accumulation, Float lr, float minLrRatio,
                           Integer warmup, float weightDecay, float clip, Integer evalInterval, int evalBatches,
                           long seed, Path out, boolean resume, int checkpointInterval, int sampleTokens,
                           String device, boolean progressBar) {
}
