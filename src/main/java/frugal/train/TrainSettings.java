package frugal.train;

import frugal.FrugalException;

import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Function;
import java.util.function.Supplier;

/**
 * The settings that shape a run's loss curve. A fresh run takes each from its flag, else from the preset or the
 * built-in default. A resumed run takes each from the checkpoint unless the flag is given, so that
 * {@code frugal train --resume} alone continues exactly the run it interrupted; a flag that differs from the
 * checkpoint wins and is reported (the curve then differs from an uninterrupted run's).
 * <p>
 * In checkpoint metadata each setting is stored under its flag's name ({@code lr}, {@code weight-decay}, …).
 */
public record TrainSettings(String tokenizer, Path data, long maxBytes, int batch, int seq, int accumulation,
                            int steps, float lr, float minLrRatio, int warmup, float weightDecay, float clip, long seed) {
    public static final int DEFAULT_ACCUMULATION = 1;
    public static final float DEFAULT_MIN_LR_RATIO = 0.1f;
    public static final float DEFAULT_WEIGHT_DECAY = 0.1f;
    public static final float DEFAULT_CLIP = 1.0f;
    public static final long DEFAULT_SEED = 1337;

    /**
     * Resolves the settings of a run; {@code saved} is the checkpoint's state (empty for a fresh run). Each flag
     * that overrides a saved value is added to {@code overrides} as "--flag given (checkpoint: saved)".
     */
    public static TrainSettings resolve(TrainOptions o, Preset preset, Map<String, String> saved, List<String> overrides) {
        Resolver r = new Resolver(saved, overrides);
        String tokenizer = r.pick("tokenizer", o.tokenizer(), s -> s, preset::tokenizer);
        // The default corpus (the JDK's src.zip) is stored as an empty path.
        String dataText = r.pick("data", o.data() == null ? null : o.data().toAbsolutePath().normalize().toString(), s -> s, () -> "");
        long maxBytes = r.pick("max-bytes", o.maxBytes(), Long::valueOf, preset::maxBytes);
        int batch = r.pick("batch", o.batch(), Integer::valueOf, preset::batch);
        int seq = r.pick("seq", o.seq(), Integer::valueOf, preset::seq);
        int accumulation = r.pick("accumulation", o.accumulation(), Integer::valueOf, () -> DEFAULT_ACCUMULATION);
        int steps = r.pick("steps", o.steps(), Integer::valueOf, preset::steps);
        float lr = r.pick("lr", o.lr(), Float::valueOf, preset::lr);
        float minLrRatio = r.pick("min-lr-ratio", o.minLrRatio(), Float::valueOf, () -> DEFAULT_MIN_LR_RATIO);
        int warmup = r.pick("warmup", o.warmup(), Integer::valueOf, () -> Math.min(preset.warmup(), steps / 10));
        float weightDecay = r.pick("weight-decay", o.weightDecay(), Float::valueOf, () -> DEFAULT_WEIGHT_DECAY);
        float clip = r.pick("clip", o.clip(), Float::valueOf, () -> DEFAULT_CLIP);
        long seed = r.pick("seed", o.seed(), Long::valueOf, () -> DEFAULT_SEED);
        return new TrainSettings(tokenizer, dataText.isEmpty() ? null : Path.of(dataText), maxBytes, batch, seq,
                accumulation, steps, lr, minLrRatio, warmup, weightDecay, clip, seed);
    }

    /** The settings as checkpoint metadata, read back by {@link #resolve}. */
    public Map<String, String> toState() {
        Map<String, String> state = new HashMap<>();
        state.put("tokenizer", tokenizer);
        state.put("data", data == null ? "" : data.toAbsolutePath().normalize().toString());
        state.put("max-bytes", Long.toString(maxBytes));
        state.put("batch", Integer.toString(batch));
        state.put("seq", Integer.toString(seq));
        state.put("accumulation", Integer.toString(accumulation));
        state.put("steps", Integer.toString(steps));
        state.put("lr", Float.toString(lr));
        state.put("min-lr-ratio", Float.toString(minLrRatio));
        state.put("warmup", Integer.toString(warmup));
        state.put("weight-decay", Float.toString(weightDecay));
        state.put("clip", Float.toString(clip));
        state.put("seed", Long.toString(seed));
        return state;
    }

    private record Resolver(Map<String, String> saved, List<String> overrides) {
        <T> T pick(String key, T given, Function<String, T> parse, Supplier<T> fallback) {
            if (!saved.containsKey(key)) return given != null ? given : fallback.get();
            T stored;
            try {
                stored = parse.apply(saved.get(key));
            } catch (NumberFormatException e) {
                throw new FrugalException("the checkpoint's setting " + key + " = '" + saved.get(key) + "' is not a number");
            }
            if (given == null) return stored;
            if (!given.equals(stored)) overrides.add("--" + key + " " + given + " (checkpoint: " + stored + ")");
            return given;
        }
    }
}
