package frugal.train;

import com.fasterxml.jackson.databind.ObjectMapper;
import frugal.FrugalException;
import frugal.backend.Backend;
import frugal.io.Safetensors;
import frugal.model.ModelConfig;
import frugal.model.ModelFiles;
import frugal.model.Transformer;
import frugal.nn.Param;
import frugal.tensor.Tensor;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

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

    private Checkpoint() {
    }

    /** {@code state} holds whatever else the run needs to continue exactly (data position, options). */
    public static void save(Path file, Transformer model, AdamW optimizer, Backend backend, Map<String, String> state) {
        List<Safetensors.Entry> entries = new ArrayList<>(ModelFiles.weightEntries(model, backend));
        List<Param> params = model.params().all();
        for (int i = 0; i < params.size(); i++) {
            entries.add(entry("optimizer.m." + params.get(i).name(), optimizer.firstMoments().get(i), backend));
            entries.add(entry("optimizer.v." + params.get(i).name(), optimizer.secondMoments().get(i), backend));
        }
        Map<String, String> meta = new HashMap<>();
        meta.put("format", "pt");
        meta.put(CONFIG, model.config().toHf().toString());
        meta.put(STEP, Integer.toString(optimizer.stepCount()));
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

    /** What a checkpoint holds, opened for reading. */
    public record Loaded(ModelConfig config, int step, Map<String, String> state) {
    }

    /** Reads config, step and state; {@link #restore} then fills a model and optimizer built from the config. */
    public static Loaded read(Path file) {
        try (Safetensors st = Safetensors.open(file)) {
            Map<String, String> meta = st.metadata();
            String cfg = meta.get(CONFIG), step = meta.get(STEP), state = meta.get(STATE);
            if (cfg == null || step == null || state == null) {
                throw new FrugalException(file + ": not a Frugal checkpoint (metadata " + CONFIG + ", " + STEP + " or " + STATE + " is missing)");
            }
            ObjectMapper json = new ObjectMapper();
            @SuppressWarnings("unchecked")
            Map<String, String> stateMap = json.readValue(state, Map.class);
            return new Loaded(ModelConfig.fromHf(json.readTree(cfg), file + " (metadata " + CONFIG + ")"),
                    Integer.parseInt(step), stateMap);
        } catch (IOException | NumberFormatException e) {
            throw new FrugalException(file + ": unreadable checkpoint metadata: " + e.getMessage(), e);
        }
    }

    public static void restore(Path file, Transformer model, AdamW optimizer, Backend backend) {
        try (Safetensors st = Safetensors.open(file)) {
            ModelFiles.loadWeights(model, ModelFiles.source(st, ""), backend);
            List<Param> params = model.params().all();
            for (int i = 0; i < params.size(); i++) {
                upload(st, "optimizer.m." + params.get(i).name(), optimizer.firstMoments().get(i), backend);
                upload(st, "optimizer.v." + params.get(i).name(), optimizer.secondMoments().get(i), backend);
            }
            optimizer.setStepCount(Integer.parseInt(st.metadata().get(STEP)));
        }
    }

    private static void upload(Safetensors st, String name, Tensor dst, Backend backend) {
        if (!st.contains(name)) throw new FrugalException(st.file() + ": tensor " + name + " is missing");
        float[] values = st.readFloats(name);
        if (values.length != dst.size()) {
            throw new FrugalException(st.file() + ": tensor " + name + " has " + values.length + " values, expected " + dst.size());
        }
        backend.upload(dst, MemorySegment.ofArray(values));
    }
}
