package frugal.model;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import frugal.FrugalException;

/**
 * The shape of a model, read from and written as a Hugging Face {@code config.json}. Two families:
 * GPT-2 (LayerNorm, GELU, learned positions, tied head) and Llama (RMSNorm, SwiGLU, RoPE, GQA).
 */
public record ModelConfig(Family family, int vocabSize, int maxSeq, int dim, int layers, int heads, int kvHeads,
                          int headDim, int hidden, float normEps, float ropeTheta, boolean tiedEmbeddings) {

    public enum Family { GPT2, LLAMA }

    public ModelConfig {
        if (vocabSize <= 0 || maxSeq <= 0 || dim <= 0 || layers <= 0 || heads <= 0 || kvHeads <= 0 || hidden <= 0) {
            throw new FrugalException("model config has a non-positive size: " + this);
        }
        if (heads % kvHeads != 0) throw new FrugalException("model config: " + heads + " heads are not a multiple of " + kvHeads + " key/value heads");
        if (headDim * heads != dim && family == Family.GPT2) throw new FrugalException("model config: width " + dim + " is not divisible into " + heads + " heads");
        if (family == Family.LLAMA && headDim % 2 != 0) throw new FrugalException("model config: RoPE needs an even head_dim, got " + headDim);
    }

    public static ModelConfig gpt2(int vocab, int maxSeq, int dim, int layers, int heads) {
        return new ModelConfig(Family.GPT2, vocab, maxSeq, dim, layers, heads, heads, dim / heads, 4 * dim, 1e-5f, 0, true);
    }

    public static ModelConfig llama(int vocab, int maxSeq, int dim, int layers, int heads, int kvHeads, int hidden) {
        return new ModelConfig(Family.LLAMA, vocab, maxSeq, dim, layers, heads, kvHeads, dim / heads, hidden, 1e-5f, 10000f, false);
    }

    /** Reads a Hugging Face config.json; {@code source} names the file in errors. */
    public static ModelConfig fromHf(JsonNode j, String source) {
        String type = j.path("model_type").asText("");
        try {
            return switch (type) {
                case "gpt2" -> {
                    String act = j.path("activation_function").asText("gelu_new");
                    if (!act.equals("gelu_new") && !act.equals("gelu_pytorch_tanh")) {
                        throw new FrugalException(source + ": activation_function " + act + " is not supported (only the tanh GELU, gelu_new)");
                    }
                    int dim = need(j, "n_embd", source);
                    int heads = need(j, "n_head", source);
                    JsonNode inner = j.path("n_inner");
                    yield new ModelConfig(Family.GPT2, need(j, "vocab_size", source), need(j, "n_positions", source), dim,
                            need(j, "n_layer", source), heads, heads, dim / heads,
                            inner.isNumber() ? inner.asInt() : 4 * dim, (float) j.path("layer_norm_epsilon").asDouble(1e-5), 0,
                            j.path("tie_word_embeddings").asBoolean(true));
                }
                case "llama" -> {
                    if (j.path("attention_bias").asBoolean(false) || j.path("mlp_bias").asBoolean(false)) {
                        throw new FrugalException(source + ": Llama with attention_bias or mlp_bias is not supported");
                    }
                    int dim = need(j, "hidden_size", source);
                    int heads = need(j, "num_attention_heads", source);
                    JsonNode theta = j.has("rope_theta") ? j.get("rope_theta") : j.path("rope_parameters").path("rope_theta");
                    String ropeType = j.path("rope_parameters").path("rope_type").asText(j.path("rope_scaling").path("rope_type").asText("default"));
                    if (!ropeType.equals("default")) throw new FrugalException(source + ": rope_type " + ropeType + " is not supported (only default)");
                    yield new ModelConfig(Family.LLAMA, need(j, "vocab_size", source), need(j, "max_position_embeddings", source), dim,
                            need(j, "num_hidden_layers", source), heads, j.path("num_key_value_heads").asInt(heads),
                            j.path("head_dim").asInt(dim / heads), need(j, "intermediate_size", source),
                            (float) j.path("rms_norm_eps").asDouble(1e-6), (float) theta.asDouble(10000.0),
                            j.path("tie_word_embeddings").asBoolean(false));
                }
                default -> throw new FrugalException(source + ": model_type \"" + type + "\" is not supported (gpt2 or llama)");
            };
        } catch (FrugalException e) {
            if (e.getMessage().startsWith(source)) throw e;
            throw new FrugalException(source + ": " + e.getMessage());
        }
    }

    private static int need(JsonNode j, String key, String source) {
        JsonNode v = j.get(key);
        if (v == null || !v.canConvertToInt()) throw new FrugalException(source + ": missing or non-integer \"" + key + "\"");
        return v.asInt();
    }

    /** This config as a Hugging Face config.json. */
    public ObjectNode toHf() {
        ObjectNode j = new ObjectMapper().createObjectNode();
        if (family == Family.GPT2) {
            j.putArray("architectures").add("GPT2LMHeadModel");
            j.put("model_type", "gpt2");
            j.put("activation_function", "gelu_new");
            j.put("vocab_size", vocabSize);
            j.put("n_positions", maxSeq);
            j.put("n_embd", dim);
            j.put("n_layer", layers);
            j.put("n_head", heads);
            j.put("n_inner", hidden);
            j.put("layer_norm_epsilon", normEps);
        } else {
            j.putArray("architectures").add("LlamaForCausalLM");
            j.put("model_type", "llama");
            j.put("hidden_act", "silu");
            j.put("vocab_size", vocabSize);
            j.put("max_position_embeddings", maxSeq);
            j.put("hidden_size", dim);
            j.put("num_hidden_layers", layers);
            j.put("num_attention_heads", heads);
            j.put("num_key_value_heads", kvHeads);
            j.put("head_dim", headDim);
            j.put("intermediate_size", hidden);
            j.put("rms_norm_eps", normEps);
            j.put("rope_theta", ropeTheta);
        }
        j.put("tie_word_embeddings", tiedEmbeddings);
        j.put("torch_dtype", "float32");
        return j;
    }

    /** Fails unless windows of {@code seq} tokens fit the positions; {@code source} names where the config came from. */
    public void checkSequence(int seq, String source) {
        if (seq > maxSeq) {
            throw new FrugalException(source + ": sequence length " + seq + " is longer than the model's " + maxSeq + " positions");
        }
    }

    /**
     * Fails unless every id of the named tokenizer ({@code tokenizerVocab} ids) has a row in the embedding: an id
     * past the table would fail deep in the backend (or read stray memory on a GPU).
     */
    public void checkVocabulary(String tokenizer, int tokenizerVocab, String source) {
        if (vocabSize < tokenizerVocab) {
            throw new FrugalException(source + ": the model's vocabulary (" + vocabSize + ") is smaller than the " + tokenizer
                    + " tokenizer's (" + tokenizerVocab + "); use the tokenizer the model was trained with (--tokenizer)");
        }
    }

    /** Width of the fused q/k/v projection. */
    public int qkvWidth() {
        return (heads + 2 * kvHeads) * headDim;
    }
}
