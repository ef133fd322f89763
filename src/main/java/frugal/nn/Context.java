package frugal.nn;

import frugal.backend.Backend;
import frugal.stash.Stash;
import frugal.stash.StashKind;
import frugal.stash.StashPolicy;
import frugal.tensor.Tensor;

/** What every module's forward and backward works with: the ops, the stash, and the buffers. */
public record Context(Backend ops, Stash stash, Workspace buffers) {
    /** A context that keeps every stashed tensor at full precision. */
    public static Context of(Backend backend) {
        return new Context(backend, Stash.keep(backend), new Workspace(backend));
    }

    /** The buffer of a tensor that forward saves under {@code kinds}: its own, or shared by the layers ({@link Stash#output}). */
    public Tensor stashed(String name, String sharedRole, int[] shape, StashKind... kinds) {
        return stash.output(buffers, name, sharedRole, shape, kinds);
    }

    /** A context whose stash follows {@code policy}; {@code seed} drives its stochastic rounding. */
    public static Context of(Backend backend, StashPolicy policy, long seed) {
        return new Context(backend, new Stash(backend, policy, seed), new Workspace(backend));
    }
}
