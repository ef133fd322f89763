package frugal.train;

import frugal.FrugalException;
import frugal.model.ModelConfig;

import java.util.Map;
import java.util.function.IntFunction;

/** A named model shape with the tokenizer, corpus cap and training defaults that suit it. */
public record Preset(String name, IntFunction<ModelConfig> model, String tokenizer, long maxBytes, int batch, int seq,
                     int steps, float lr, int warmup, int evalInterval, String description) {

    private static final long TWO_MB = 2_000_000, EIGHT_MB = 8_000_000;

    // tiny: `frugal train` with no arguments, in 2-4 minutes on 2 shared cores. Nearly all of a step is the
    // 50,257-token output layer, so the body can be 4 layers without costing time; sequences fill all 128 positions
    // so the sample at the end never reaches untrained ones; 250 steps of 512 tokens (~130k tokens, a sixth of the
    // 2 MB read) take the loss from 10.8 to about 3.6. A higher rate (4e-3) learned more slowly.
    private static final Map<String, Preset> ALL = Map.of(
            "tiny", new Preset("tiny", vocab -> ModelConfig.gpt2(vocab, 128, 128, 4, 4), "gpt2", TWO_MB,
                    4, 128, 250, 2e-3f, 25, 50, "GPT-2 shape, 4 layers × 128 wide: 2-4 minutes on 2 cores"),
            "llama-tiny", new Preset("llama-tiny", vocab -> ModelConfig.llama(vocab, 128, 128, 4, 4, 2, 352), "gpt2", TWO_MB,
                    4, 128, 250, 2e-3f, 25, 50, "Llama shape (RMSNorm, RoPE, SwiGLU, GQA 4:2), 4 layers × 128 wide"),
            "gpt2-124m", new Preset("gpt2-124m", vocab -> ModelConfig.gpt2(vocab, 1024, 768, 12, 12), "gpt2", EIGHT_MB,
                    4, 64, 1000, 6e-4f, 100, 250, "GPT-2 small: 12 layers × 768 wide, 1024 positions"));

    public static Preset byName(String name) {
        Preset p = ALL.get(name);
        if (p == null) throw new FrugalException("unknown preset \"" + name + "\" (known: " + String.join(", ", ALL.keySet().stream().sorted().toList()) + ")");
        return p;
    }
}
