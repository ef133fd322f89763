package frugal.train;

/** Linear warmup to the peak rate, then cosine decay to {@code minLr} at the last step. */
public record LrSchedule(float peakLr, float minLr, int warmupSteps, int totalSteps) {

    /** Learning rate for a 1-based step. */
    public float at(int step) {
        if (warmupSteps > 0 && step <= warmupSteps) return peakLr * step / warmupSteps;
        int decaySteps = Math.max(1, totalSteps - warmupSteps);
        double progress = Math.min(1.0, (double) (step - warmupSteps) / decaySteps);
        return (float) (minLr + 0.5 * (peakLr - minLr) * (1 + Math.cos(Math.PI * progress)));
    }
}
