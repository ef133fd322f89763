package frugal.model;

import frugal.backend.Backend;
import frugal.io.AtomicFile;
import frugal.io.JsonFiles;
import frugal.io.Safetensors;
import frugal.nn.Param;

import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/** A model folder as Hugging Face writes it: config.json and model.safetensors. */
public final class ModelFiles {
    public static final String CONFIG = "config.json";
    public static final String WEIGHTS = "model.safetensors";

    private ModelFiles() {
    }

    public static ModelConfig readConfig(Path dir) {
        Path file = Files.isDirectory(dir) ? dir.resolve(CONFIG) : dir;
        return ModelConfig.fromHf(JsonFiles.read(file), file.toString());
    }

    /** Builds the model of {@code dir/config.json} on the backend and loads {@code dir/model.safetensors}. */
    public static Transformer load(Path dir, Backend backend) {
        Transformer model = new Transformer(readConfig(dir), backend);
        loadWeights(model, dir, backend);
        return model;
    }

    /** Loads {@code dir/model.safetensors} into a model built from a matching config. */
    public static void loadWeights(Transformer model, Path dir, Backend backend) {
        try (Safetensors st = Safetensors.open(dir.resolve(WEIGHTS))) {
            loadWeights(model, source(st, ""), backend);
        }
    }

    /** Copies every parameter from Hugging Face-named tensors of the source. */
    public static void loadWeights(Transformer model, HfWeights.Source src, Backend backend) {
        for (Param p : model.params().all()) {
            backend.upload(p.value(), MemorySegment.ofArray(HfWeights.toInternal(p, src)));
        }
    }

    /** The model's parameters as Hugging Face tensors (float32). */
    public static List<Safetensors.Entry> weightEntries(Transformer model, Backend backend) {
        List<Safetensors.Entry> entries = new ArrayList<>();
        for (Param p : model.params().all()) {
            float[] values = new float[(int) p.value().size()];
            backend.download(p.value(), MemorySegment.ofArray(values));
            for (HfWeights.Named t : HfWeights.toHf(p, values).values()) {
                entries.add(Safetensors.Entry.f32(t.name(), t.shape(), t.values()));
            }
        }
        return entries;
    }

    /** Writes config.json and model.safetensors into dir, each atomically. */
    public static void save(Transformer model, Backend backend, Path dir) {
        try {
            Files.createDirectories(dir);
        } catch (java.io.IOException e) {
            throw new frugal.FrugalException("cannot create " + dir + ": " + e.getMessage(), e);
        }
        Safetensors.write(dir.resolve(WEIGHTS), Map.of("format", "pt"), weightEntries(model, backend));
        writeConfig(model.config(), dir.resolve(CONFIG));
    }

    public static void writeConfig(ModelConfig config, Path file) {
        byte[] json = config.toHf().toPrettyString().getBytes(StandardCharsets.UTF_8);
        AtomicFile.write(file, out -> out.write(ByteBuffer.wrap(json)));
    }

    /** Tensors of an open safetensors file named {@code prefix + hfName}. */
    public static HfWeights.Source source(Safetensors st, String prefix) {
        return new HfWeights.Source() {
            @Override
            public String source() {
                return st.file().toString();
            }

            @Override
            public boolean has(String name) {
                return st.contains(prefix + name);
            }

            @Override
            public int[] shape(String name) {
                return st.shape(prefix + name);
            }

            @Override
            public float[] read(String name) {
                return st.readFloats(prefix + name);
            }
        };
    }
}
