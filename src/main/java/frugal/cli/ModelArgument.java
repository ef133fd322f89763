package frugal.cli;

import frugal.FrugalException;
import frugal.backend.Backend;
import frugal.data.Tokenizer;
import frugal.data.Tokenizers;
import frugal.io.Safetensors;
import frugal.model.ModelFiles;
import frugal.model.Transformer;
import frugal.train.Checkpoint;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * A model named on the command line: a Hugging Face folder (config.json + model.safetensors, as
 * {@code frugal train} writes into out/model) or a Frugal checkpoint file. The tokenizer is the one the
 * run recorded (tokenizer.txt / checkpoint state) unless given.
 */
final class ModelArgument {
    private ModelArgument() {
    }

    static Transformer load(Path path, Backend backend) {
        if (!Files.exists(path)) throw new FrugalException(path + ": no such model folder or checkpoint");
        if (Files.isDirectory(path)) return ModelFiles.load(path, backend);
        Transformer model = new Transformer(Checkpoint.read(path).config(), backend);
        try (Safetensors st = Safetensors.open(path)) {
            ModelFiles.loadWeights(model, ModelFiles.source(st, ""), backend);
        }
        return model;
    }

    static Tokenizer tokenizer(Path path, String given) {
        if (given != null) return Tokenizers.byName(given);
        try {
            if (Files.isDirectory(path) && Files.exists(path.resolve("tokenizer.txt"))) {
                return Tokenizers.byName(Files.readString(path.resolve("tokenizer.txt")).trim());
            }
        } catch (IOException e) {
            throw new FrugalException(path.resolve("tokenizer.txt") + ": " + e.getMessage(), e);
        }
        if (Files.isRegularFile(path)) {
            String name = Checkpoint.read(path).state().get("tokenizer");
            if (name != null) return Tokenizers.byName(name);
        }
        return Tokenizers.byName("gpt2");
    }
}
