package frugal.train;

import frugal.FrugalException;
import frugal.stash.StashPolicy;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** How a run stashes tensors for backward: a {@code --stash} name (keep, dsq, bfp4, …) or a policy file. */
public record StashOptions(String name, Path configFile) {
    public static final StashOptions KEEP = new StashOptions("keep", null);

    /** The policy for a run of {@code totalSteps} steps (percent milestones are of it); the file wins over the name. */
    public StashPolicy policy(int totalSteps) {
        if (configFile == null) return StashPolicy.named(name, totalSteps);
        try {
            return StashPolicy.parse(Files.readString(configFile), totalSteps);
        } catch (IOException e) {
            throw new FrugalException("cannot read the stash policy " + configFile + ": " + e.getMessage(), e);
        } catch (FrugalException e) {
            throw new FrugalException(configFile + ": " + e.getMessage(), e);
        }
    }
}
