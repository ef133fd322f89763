package frugal.stash;

import frugal.tensor.Tensor;

import java.util.HashMap;
import java.util.Map;

/**
 * Every tensor a module saves in forward for its backward goes through here, by name
 * ({@code h3.attn.qkv}). The policy today is "keep" (a reference to the producer's buffer, no copy);
 * quantize (DSQ) and recompute (Lynx) policies plug in behind the same two calls. The ledger counts
 * bytes saved and read: the measure of what those policies save.
 */
public final class Stash {
    private final Map<String, Tensor> saved = new HashMap<>();
    private long bytesSaved;
    private long bytesRead;

    public void save(String name, Tensor t) {
        saved.put(name, t);
        bytesSaved += t.byteSize();
    }

    public Tensor load(String name) {
        Tensor t = saved.get(name);
        if (t == null) throw new IllegalStateException("nothing stashed under " + name + " (backward without forward?)");
        bytesRead += t.byteSize();
        return t;
    }

    /** Forgets everything saved (after backward, or after a forward that needs no backward). */
    public void clear() {
        saved.clear();
    }

    public long bytesSaved() {
        return bytesSaved;
    }

    public long bytesRead() {
        return bytesRead;
    }

    /** Bytes held right now: the activation memory backward will need. */
    public long bytesHeld() {
        return saved.values().stream().mapToLong(Tensor::byteSize).sum();
    }
}
