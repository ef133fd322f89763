package frugal.model;

import frugal.FrugalException;
import frugal.backend.Backend;
import frugal.io.AtomicFile;
import frugal.io.JsonFiles;
import frugal.io.Safetensors;
import frugal.nn.Param;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/** A model folder as Hugging Face writes it: config.json and model.safetensors. */
public final class ModelFiles {
    public static final String CONFIG = "config.json";
    public static final String WEIGHTS = "model.safetensors";

    private ModelFiles() {
    }

    /** Reads {@code path/config.json}, or {@code path} itself when it is a file. */
    public static ModelConfig readConfig(Path path) {
        Path file = configFile(path);
        return ModelConfig.fromHf(JsonFiles.read(file), file.toString());
    }

    /** The config file {@link #readConfig} reads for {@code path}. */
    public static Path configFile(Path path) {
        return Files.isDirectory(path) ? path.resolve(CONFIG) : path;
    }

    /** Builds the model of {@code dir/config.json} on the backend and loads {@code dir/model.safetensors}. */
    public static Transformer load(Path dir, Backend backend) {
        Transformer model = new Transformer(readConfig(dir), backend);
        loadWeights(model, dir, backend);
        return model;
    }

    /** Loads {@code dir/model.safetensors} into a model built from a matching config (every tensor must fit it). */
    public static void loadWeights(Transformer model, Path dir, Backend backend) {
        try (Safetensors st = Safetensors.open(dir.resolve(WEIGHTS))) {
            rejectUnusedTensors(model, st, dir.resolve(CONFIG));
            loadWeights(model, source(st, ""), backend);
        }
    }

    /**
     * A tensor the model has no place for means that the config describes another model than the weights (fewer
     * layers, say); loading the rest would silently train or score a truncated model. Buffers that Hugging Face
     * itself skips on loading (attention masks, RoPE frequencies, a tied head's copy) are not weights.
     */
    private static void rejectUnusedTensors(Transformer model, Safetensors st, Path config) {
        Set<String> expected = new HashSet<>();
        for (Param p : model.params().all()) {
            for (Param.HfPart part : p.hfParts()) expected.add(part.name());
        }
        List<String> unused = st.names().stream().filter(name -> !expected.contains(name) && !hfBuffer(name, model.config())).toList();
        if (!unused.isEmpty()) {
            throw new FrugalException(st.file() + ": " + unused.size() + " tensors have no place in the model " + config
                    + " describes (first: " + unused.getFirst() + "); the config does not match the weights");
        }
    }

    private static boolean hfBuffer(String name, ModelConfig config) {
        return name.endsWith(".attn.bias") || name.endsWith(".attn.masked_bias") || name.endsWith(".rotary_emb.inv_freq")
                || name.equals("lm_head.weight") && config.tiedEmbeddings();
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
        } catch (IOException e) {
            throw new FrugalException(dir + ": cannot create the folder: " + AtomicFile.describe(e), e);
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
