package frugal.nn;

import frugal.backend.Backend;
import frugal.stash.Stash;

/** What every module's forward and backward works with: the ops, the stash, and the buffers. */
public record Context(Backend ops, Stash stash, Workspace buffers) {
    public static Context of(Backend backend) {
        return new Context(backend, new Stash(), new Workspace(backend));
    }
}
