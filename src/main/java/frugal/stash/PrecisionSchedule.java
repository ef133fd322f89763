package frugal.stash;

import frugal.FrugalException;

import java.util.Arrays;

/**
 * When the stash policy moves from one stage (set of bit widths) to the next: monotonically, never back. Two
 * triggers, as DSQ's time-adaptive precision: fixed milestones (stage i starts at step {@code starts[i]}), or a
 * plateau of the training loss (the next stage starts when the mean loss of the last {@code window} steps fell by
 * less than {@code minImprovement}, relative, below the mean of the {@code window} steps before, counted from the
 * start of the current stage). The plateau trigger keeps state, which a checkpoint carries ({@link #state()}).
 */
public final class PrecisionSchedule {
    private final int stages;
    private final int[] starts;
    private final int window;
    private final double minImprovement;
    private int stage;
    private int stageStart = 1;
    private final double[] recent;
    private int observed;

    private PrecisionSchedule(int stages, int[] starts, int window, double minImprovement) {
        this.stages = stages;
        this.starts = starts;
        this.window = window;
        this.minImprovement = minImprovement;
        this.recent = new double[2 * Math.max(1, window)];
    }

    /** Stage i from step starts[i] on (1-based steps; starts[0] ≤ 1, increasing). */
    public static PrecisionSchedule milestones(int... starts) {
        if (starts.length == 0) throw new FrugalException("a precision schedule needs at least one stage");
        for (int i = 1; i < starts.length; i++) {
            if (starts[i] <= starts[i - 1]) {
                throw new FrugalException("stage starts must increase: " + Arrays.toString(starts));
            }
        }
        if (starts[0] > 1) throw new FrugalException("the first stage must start at step 0 or 1, not " + starts[0]);
        return new PrecisionSchedule(starts.length, starts.clone(), 0, 0);
    }

    /** {@code stages} stages, each next one when the training loss plateaus (see the class comment). */
    public static PrecisionSchedule plateau(int stages, int window, double minImprovement) {
        if (window < 1) throw new FrugalException("the plateau window must be at least one step, got " + window);
        return new PrecisionSchedule(stages, null, window, minImprovement);
    }

    public int stages() {
        return stages;
    }

    /** The stage in force for the step about to run (1-based). */
    public int stageAt(int step) {
        if (starts != null) {
            int s = 0;
            while (s + 1 < stages && step >= starts[s + 1]) s++;
            stage = s;
        }
        return stage;
    }

    /** Feeds the training loss of a finished step to the plateau trigger (milestones ignore it). */
    public void observe(int step, double loss) {
        if (starts != null || stage + 1 >= stages) return;
        recent[observed % recent.length] = loss;
        observed++;
        if (observed < 2 * window) return;
        double older = 0, newer = 0;
        for (int i = 0; i < window; i++) {
            newer += recent[(observed - 1 - i) % recent.length];
            older += recent[(observed - 1 - window - i) % recent.length];
        }
        if (newer > older * (1 - minImprovement)) {
            stage++;
            stageStart = step + 1;
            observed = 0;
        }
    }

    /** The trigger's state, enough to continue exactly after a checkpoint. */
    public String state() {
        StringBuilder s = new StringBuilder("stage=" + stage + ";start=" + stageStart + ";observed=" + observed + ";recent=");
        for (int i = 0; i < recent.length; i++) s.append(i > 0 ? "," : "").append(Double.toString(recent[i]));
        return s.toString();
    }

    public void restore(String state) {
        try {
            for (String part : state.split(";")) {
                String[] kv = part.split("=", 2);
                switch (kv[0]) {
                    case "stage" -> stage = Integer.parseInt(kv[1]);
                    case "start" -> stageStart = Integer.parseInt(kv[1]);
                    case "observed" -> observed = Integer.parseInt(kv[1]);
                    case "recent" -> {
                        String[] values = kv[1].split(",");
                        if (values.length != recent.length) throw new NumberFormatException("window of " + values.length + " losses, expected " + recent.length);
                        for (int i = 0; i < values.length; i++) recent[i] = Double.parseDouble(values[i]);
                    }
                    default -> throw new NumberFormatException("unknown field " + kv[0]);
                }
            }
        } catch (RuntimeException e) {
            throw new FrugalException("cannot restore the stash precision schedule from \"" + state + "\": " + e.getMessage(), e);
        }
        if (stage < 0 || stage >= stages) throw new FrugalException("saved stash stage " + stage + " is outside 0.." + (stages - 1));
    }

    /** The step at which the current stage began. */
    public int stageStart() {
        return starts != null ? Math.max(1, starts[stage]) : stageStart;
    }
}
