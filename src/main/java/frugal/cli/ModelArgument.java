package frugal.cli;

import frugal.FrugalException;
import frugal.backend.Backend;
import frugal.data.Tokenizer;
import frugal.data.Tokenizers;
import frugal.io.Safetensors;
import frugal.model.ModelConfig;
import frugal.model.ModelFiles;
import frugal.model.Transformer;
import frugal.train.Checkpoint;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * A model named on the command line: a Hugging Face folder (config.json + model.safetensors, as
 * {@code frugal train} writes into out/model), a Frugal checkpoint file, or a run folder holding either. The tokenizer is the one the
 * run recorded (tokenizer.txt / checkpoint state) unless given.
 */
final class ModelArgument {
    private ModelArgument() {
    }

    /** The model at {@code path}, checked against the tokenizer before any weights are allocated. */
    static Transformer load(Path given, Tokenizer tokenizer, Backend backend) {
        Path path = resolve(given);
        boolean folder = Files.isDirectory(path);
        ModelConfig config = folder ? ModelFiles.readConfig(path) : Checkpoint.read(path).config();
        config.checkVocabulary(tokenizer.name(), tokenizer.vocabSize(), path.toString());
        Transformer model = new Transformer(config, backend);
        if (folder) {
            ModelFiles.loadWeights(model, path, backend);
        } else {
            try (Safetensors st = Safetensors.open(path)) {
                ModelFiles.loadWeights(model, ModelFiles.source(st, ""), backend);
            }
        }
        return model;
    }

    static Tokenizer tokenizer(Path named, String given) {
        Path path = resolve(named);
        if (given != null) return Tokenizers.byName(given);
        Path recorded = path.resolve("tokenizer.txt");
        if (Files.isDirectory(path) && Files.exists(recorded)) {
            try {
                return Tokenizers.byName(Files.readString(recorded));
            } catch (IOException | FrugalException e) {
                throw new FrugalException(recorded + ": " + e.getMessage(), e);
            }
        }
        if (Files.isRegularFile(path)) {
            String name = Checkpoint.read(path).state().get("tokenizer");
            if (name != null) return Tokenizers.byName(name);
        }
        return Tokenizers.byName("gpt2");
    }

    /**
     * The model folder or checkpoint that {@code path} names: a run folder (what {@code frugal train --out} names)
     * stands for its finished model/, or for its checkpoint while the run is unfinished.
     */
    private static Path resolve(Path path) {
        if (!Files.exists(path)) throw new FrugalException(path + ": no such model folder or checkpoint");
        if (!Files.isDirectory(path) || Files.exists(path.resolve(ModelFiles.CONFIG))) return path;
        if (Files.exists(path.resolve("model").resolve(ModelFiles.CONFIG))) return path.resolve("model");
        if (Files.exists(path.resolve(Checkpoint.FILE))) return path.resolve(Checkpoint.FILE);
        return path;
    }
}
