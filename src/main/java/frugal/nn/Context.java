package frugal.nn;

import frugal.backend.Backend;
import frugal.stash.Stash;
import frugal.stash.StashPolicy;

/** What every module's forward and backward works with: the ops, the stash, and the buffers. */
public record Context(Backend ops, Stash stash, Workspace buffers) {
    /** A context that keeps every stashed tensor at full precision. */
    public static Context of(Backend backend) {
        return new Context(backend, Stash.keep(backend), new Workspace(backend));
    }

    /** A context whose stash follows {@code policy}; {@code seed} drives its stochastic rounding. */
    public static Context of(Backend backend, StashPolicy policy, long seed) {
        return new Context(backend, new Stash(backend, policy, seed), new Workspace(backend));
    }
}
