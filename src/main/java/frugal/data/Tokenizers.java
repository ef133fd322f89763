package frugal.data;

import frugal.FrugalException;

import java.util.Locale;

/** The tokenizers by the names the CLI, token files and checkpoints use. */
public final class Tokenizers {
    private Tokenizers() {
    }

    /** {@code "gpt2"} (GPT-2 BPE) or {@code "byte"} (UTF-8 bytes); case-insensitive. */
    public static Tokenizer byName(String name) {
        String key = name == null ? "" : name.trim().toLowerCase(Locale.ROOT);
        return switch (key) {
            case BpeTokenizer.NAME -> BpeTokenizer.gpt2();
            case ByteTokenizer.NAME -> ByteTokenizer.instance();
            default -> throw new FrugalException("unknown tokenizer '" + name + "': expected gpt2 (GPT-2 BPE) or byte (UTF-8 bytes)");
        };
    }
}
