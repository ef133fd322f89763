package frugal.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import frugal.FrugalException;
import frugal.backend.Backend;
import frugal.io.JsonFiles;
import frugal.io.Safetensors;
import frugal.model.HfWeights;
import frugal.model.ModelConfig;
import frugal.model.ModelFiles;
import frugal.model.Transformer;
import frugal.nn.Param;
import frugal.tensor.Tensor;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Function;

/**
 * A training checkpoint in one safetensors file, written atomically: the weights under their Hugging
 * Face names (so the file doubles as a model), AdamW's moments under {@code optimizer.m.}/{@code optimizer.v.},
 * and in the metadata the model config, the step, and the data loader's position.
 */
public final class Checkpoint {
    public static final String FILE = "checkpoint.safetensors";
    private static final String CONFIG = "frugal.config";
    private static final String STEP = "frugal.step";
    private static final String STATE = "frugal.state";
    private static final ValueLayout.OfFloat LE_FLOAT = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private Checkpoint() {
    }

    /**
     * {@code state} holds whatever else the run needs to continue exactly (data position, options). A NaN or infinity
     * in the weights or moments aborts the write, so a diverged state never replaces the last good checkpoint.
     */
    public static void save(Path file, Transformer model, AdamW optimizer, Backend backend, Map<String, String> state) {
        int step = optimizer.stepCount();
        List<Safetensors.Entry> entries = new ArrayList<>();
        for (Safetensors.Entry e : ModelFiles.weightEntries(model, backend)) entries.add(finite(e, file, step));
        List<Param> params = model.params().all();
        for (int i = 0; i < params.size(); i++) {
            entries.add(finite(entry("optimizer.m." + params.get(i).name(), optimizer.firstMoments().get(i), backend), file, step));
            entries.add(finite(entry("optimizer.v." + params.get(i).name(), optimizer.secondMoments().get(i), backend), file, step));
        }
        Map<String, String> meta = new HashMap<>();
        meta.put("format", "pt");
        meta.put(CONFIG, model.config().toHf().toString());
        meta.put(STEP, Integer.toString(step));
        try {
            meta.put(STATE, new ObjectMapper().writeValueAsString(state));
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
        Safetensors.write(file, meta, entries);
    }

    private static Safetensors.Entry entry(String name, Tensor t, Backend backend) {
        float[] values = new float[(int) t.size()];
        backend.download(t, MemorySegment.ofArray(values));
        return Safetensors.Entry.f32(name, t.shape(), values);
    }

    /** The F32 entry, checked as it is written: the atomic write then leaves an existing file as it was. */
    private static Safetensors.Entry finite(Safetensors.Entry e, Path file, int step) {
        return new Safetensors.Entry(e.name(), e.dtype(), e.shape(), dst -> {
            e.source().fill(dst);
            for (long i = 0; i < dst.byteSize() / Float.BYTES; i++) {
                float v = dst.getAtIndex(LE_FLOAT, i);
                if (!Float.isFinite(v)) {
                    throw new FrugalException("step " + step + ": " + e.name() + " holds " + v + " at index " + i
                            + "; the checkpoint was not saved and " + file + " is left as it was");
                }
            }
        });
    }

    /** What a checkpoint holds, opened for reading. */
    public record Loaded(Path file, ModelConfig config, int step, Map<String, String> state) {
        /** The saved state value under {@code key} through {@code parser}; a missing or rejected value names the file. */
        public <T> T parse(String key, Function<String, T> parser) {
            String text = state.get(key);
            if (text == null) throw new FrugalException(file + ": the saved state has no \"" + key + "\"");
            try {
                return parser.apply(text);
            } catch (RuntimeException e) {
                throw new FrugalException(file + ": saved " + key + " \"" + text + "\" is invalid"
                        + (e instanceof FrugalException ? ": " + e.getMessage() : ""), e);
            }
        }
    }

    /** Reads config, step and state; {@link #restore} then fills a model and optimizer built from the config. */
    public static Loaded read(Path file) {
        try (Safetensors st = Safetensors.open(file)) {
            Map<String, String> meta = st.metadata();
            String cfg = meta.get(CONFIG), step = meta.get(STEP), state = meta.get(STATE);
            if (cfg == null || step == null || state == null) {
                throw new FrugalException(file + ": not a Frugal checkpoint (metadata " + CONFIG + ", " + STEP + " or " + STATE + " is missing)");
            }
            String configSource = file + " (metadata " + CONFIG + ")";
            ModelConfig config = ModelConfig.fromHf(JsonFiles.parse(configSource, cfg.getBytes(StandardCharsets.UTF_8)), configSource);
            return new Loaded(file, config, stepCount(file, step), stateMap(file, state));
        }
    }

    private static int stepCount(Path file, String text) {
        int step;
        try {
            step = Integer.parseInt(text);
        } catch (NumberFormatException e) {
            step = -1;
        }
        if (step < 0) throw new FrugalException(file + ": metadata " + STEP + " \"" + text + "\" is not a step count");
        return step;
    }

    /** The state is a JSON object of strings, as {@link #save} writes it. */
    private static Map<String, String> stateMap(Path file, String text) {
        String source = file + " (metadata " + STATE + ")";
        JsonNode node = JsonFiles.parse(source, text.getBytes(StandardCharsets.UTF_8));
        if (!node.isObject()) throw new FrugalException(source + ": expected a JSON object, got " + node.getNodeType());
        Map<String, String> state = new HashMap<>();
        for (Map.Entry<String, JsonNode> e : node.properties()) {
            if (!e.getValue().isTextual()) {
                throw new FrugalException(source + ": value of \"" + e.getKey() + "\" must be a string, got " + e.getValue());
            }
            state.put(e.getKey(), e.getValue().textValue());
        }
        return Map.copyOf(state);
    }

    /** Fills a model and optimizer built from {@code checkpoint.config()} with its weights, moments and step. */
    public static void restore(Loaded checkpoint, Transformer model, AdamW optimizer, Backend backend) {
        try (Safetensors st = Safetensors.open(checkpoint.file())) {
            ModelFiles.loadWeights(model, ModelFiles.source(st, ""), backend);
            List<Param> params = model.params().all();
            for (int i = 0; i < params.size(); i++) {
                upload(st, "optimizer.m." + params.get(i).name(), optimizer.firstMoments().get(i), backend);
                upload(st, "optimizer.v." + params.get(i).name(), optimizer.secondMoments().get(i), backend);
            }
            optimizer.setStepCount(checkpoint.step());
        }
    }

    private static void upload(Safetensors st, String name, Tensor dst, Backend backend) {
        if (!st.contains(name)) throw new FrugalException(st.file() + ": tensor " + name + " is missing");
        if (!Arrays.equals(st.shape(name), dst.shape())) {
            throw new FrugalException(st.file() + ": tensor " + name + " has shape " + Arrays.toString(st.shape(name))
                    + ", expected " + Arrays.toString(dst.shape()));
        }
        float[] values = st.readFloats(name);
        HfWeights.requireFinite(values, st.file().toString(), name);
        backend.upload(dst, MemorySegment.ofArray(values));
    }
}
