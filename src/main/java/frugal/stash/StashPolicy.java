package frugal.stash;

import frugal.FrugalException;
import frugal.quant.QuantFormat;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * What the stash does, stage by stage: a number format (or keep, full precision) for each of DSQ's points
 * {@link QuantPoint q0–q3} and for each {@link StashKind}; a kind either follows a point (by default every stashed
 * activation follows q1, statistics and ids are kept) or has formats of its own. A {@link PrecisionSchedule} says
 * which stage is in force.
 *
 * <p>Written as text, one setting a line ({@code #} starts a comment):
 * <pre>
 * q0 = bfp8                       # a format, keep, or one per stage separated by commas
 * q1 = bfp3/32/sr, bfp4/32/sr
 * stages = 0, 50%                 # stage starts: steps, or percent of the run; or instead
 * trigger = plateau 50 0.005      # next stage when the loss of the last 50 steps fell by < 0.5%
 * norm_input = q1                 # a kind: a point to follow, a format (list), or keep
 * softmax_stats = recompute       # or keep (a list, per stage, as formats are)
 * </pre>
 *
 * <p>Softmax statistics (attention's log-sum-exp) are either kept, the forward's own, or recomputed: backward reruns
 * the attention forward on the q, k, v it reads back. Backward rebuilds the probabilities as exp(q·k − lse), so with
 * q and k quantized coarsely the forward's exact lse no longer normalizes the rows, an error the exponential
 * amplifies (3–4-bit q, k on GPT-2 124M: gradient norms of 10²–10³). By default they are recomputed where
 * {@code attention_qkv} is quantized below {@link #EXACT_SOFTMAX_BITS} bits, and kept otherwise.
 */
public final class StashPolicy {
    /**
     * DSQ as this project runs it by default: 8-bit GEMM operands and gradients between layers (q0, q2, q3); what is
     * stashed for backward (q1 and every stashed activation) at 3 bits for the first half of the run, then 4 bits,
     * rounded to nearest. On the tiny preset this matched the full-precision loss with a 4.2× smaller stash than
     * bf16, where stochastic rounding and 2–4-bit gradients lost 3–7% (docs/experiments/dsq.md).
     */
    public static final String DSQ = """
            q0 = bfp8/32/rn
            q1 = bfp3/32/rn, bfp4/32/rn
            q2 = bfp8/32/rn
            q3 = bfp8/32/rn
            stages = 0, 50%
            """;

    /**
     * The fewest bits of q, k, v at which backward uses the forward's own log-sum-exp by default: at 8 bits a score
     * q·k moves by about 1% of its spread, and the probabilities rebuilt from it by about as much.
     */
    public static final int EXACT_SOFTMAX_BITS = 8;

    private final String text;
    private final List<Map<QuantPoint, QuantFormat>> pointFormats;
    private final List<Map<StashKind, QuantFormat>> kindFormats;
    private final List<Boolean> softmaxRecomputed;
    private final PrecisionSchedule schedule;
    private int stage;

    private StashPolicy(String text, List<Map<QuantPoint, QuantFormat>> pointFormats, List<Map<StashKind, QuantFormat>> kindFormats,
                        List<Boolean> softmaxRecomputed, PrecisionSchedule schedule) {
        this.text = text;
        this.pointFormats = pointFormats;
        this.kindFormats = kindFormats;
        this.softmaxRecomputed = softmaxRecomputed;
        this.schedule = schedule;
    }

    /** Everything kept at full precision: the model's exact arithmetic. */
    public static StashPolicy keep() {
        return parse("", 1);
    }

    /**
     * From a {@code --stash} value: {@code keep}, {@code dsq}, or one fixed format (e.g. {@code bfp4},
     * {@code int8/64/sr}) for every stashed activation and q1/q2, with the GEMM operands q0/q3 at 8 bits of the same
     * scheme (or the format itself when it has more bits).
     */
    public static StashPolicy named(String name, int totalSteps) {
        String n = name.trim().toLowerCase(Locale.ROOT);
        if (n.equals("keep")) return keep();
        if (n.equals("dsq")) return parse(DSQ, totalSteps);
        QuantFormat f = QuantFormat.parse(n);
        QuantFormat gemm = f.withBits(Math.max(8, f.bits()));
        return parse("q0 = " + gemm + "\nq1 = " + f + "\nq2 = " + f + "\nq3 = " + gemm + "\n", totalSteps);
    }

    /** Parses the text form (see the class comment); percent milestones are of {@code totalSteps}. */
    public static StashPolicy parse(String text, int totalSteps) {
        Map<QuantPoint, List<QuantFormat>> points = new EnumMap<>(QuantPoint.class);
        Map<StashKind, Object> kinds = new EnumMap<>(StashKind.class); // a QuantPoint or a List<QuantFormat>
        for (StashKind k : StashKind.values()) {
            boolean activation = k != StashKind.SOFTMAX_STATS && k != StashKind.NORM_STATS && k != StashKind.TOKEN_IDS;
            kinds.put(k, activation ? QuantPoint.Q1 : keepList());
        }
        List<Boolean> softmax = null; // recompute (true) or keep per stage; null: by attention_qkv's bits
        String stagesText = null, triggerText = null;
        int lineNumber = 0;
        for (String raw : text.split("\n")) {
            lineNumber++;
            String line = raw.replaceFirst("#.*", "").trim();
            if (line.isEmpty()) continue;
            int eq = line.indexOf('=');
            if (eq < 0) throw new FrugalException("stash policy line " + lineNumber + ": expected key = value, got \"" + raw.trim() + "\"");
            String key = line.substring(0, eq).trim().toLowerCase(Locale.ROOT), value = line.substring(eq + 1).trim();
            try {
                if (key.equals("stages")) stagesText = value;
                else if (key.equals("trigger")) triggerText = value;
                else if (key.matches("q[0-3]")) points.put(QuantPoint.byKey(key), formats(value));
                else if (key.equals(StashKind.SOFTMAX_STATS.key())) softmax = softmaxChoices(value);
                else kinds.put(StashKind.byKey(key), value.matches("(?i)q[0-3]") ? QuantPoint.byKey(value.toLowerCase(Locale.ROOT)) : formats(value));
            } catch (FrugalException e) {
                throw new FrugalException("stash policy line " + lineNumber + ": " + e.getMessage(), e);
            }
        }
        if (kinds.get(StashKind.TOKEN_IDS) instanceof List<?> l && l.stream().anyMatch(f -> f != null)) {
            throw new FrugalException("stash policy: token_ids are integers and can only be kept");
        }
        int stages = 1;
        for (List<QuantFormat> l : points.values()) stages = Math.max(stages, l.size());
        for (Object o : kinds.values()) if (o instanceof List<?> l) stages = Math.max(stages, l.size());
        if (softmax != null) stages = Math.max(stages, softmax.size());
        List<Map<QuantPoint, QuantFormat>> pointFormats = new ArrayList<>();
        List<Map<StashKind, QuantFormat>> kindFormats = new ArrayList<>();
        List<Boolean> softmaxRecomputed = new ArrayList<>();
        for (int s = 0; s < stages; s++) {
            Map<QuantPoint, QuantFormat> p = new EnumMap<>(QuantPoint.class);
            for (QuantPoint q : QuantPoint.values()) p.put(q, atStage(points.getOrDefault(q, keepList()), s, stages, q.key()));
            Map<StashKind, QuantFormat> k = new EnumMap<>(StashKind.class);
            for (Map.Entry<StashKind, Object> e : kinds.entrySet()) {
                @SuppressWarnings("unchecked")
                QuantFormat f = e.getValue() instanceof QuantPoint q ? p.get(q) : atStage((List<QuantFormat>) e.getValue(), s, stages, e.getKey().key());
                k.put(e.getKey(), f);
            }
            pointFormats.add(p);
            kindFormats.add(k);
            QuantFormat qkv = k.get(StashKind.ATTENTION_QKV);
            softmaxRecomputed.add(softmax != null ? atStage(softmax, s, stages, StashKind.SOFTMAX_STATS.key())
                    : qkv != null && qkv.bits() < EXACT_SOFTMAX_BITS);
        }
        return new StashPolicy(text, pointFormats, kindFormats, softmaxRecomputed, schedule(stagesText, triggerText, stages, totalSteps));
    }

    private static PrecisionSchedule schedule(String stagesText, String triggerText, int stages, int totalSteps) {
        if (triggerText != null) {
            String[] t = triggerText.trim().split("\\s+");
            if (stagesText != null || t.length != 3 || !t[0].equalsIgnoreCase("plateau")) {
                throw new FrugalException("stash policy: trigger must read \"plateau WINDOW MIN_IMPROVEMENT\" (and replaces stages), got \"" + triggerText + "\"");
            }
            try {
                return PrecisionSchedule.plateau(stages, Integer.parseInt(t[1]), Double.parseDouble(t[2]));
            } catch (NumberFormatException e) {
                throw new FrugalException("stash policy: bad plateau trigger \"" + triggerText + "\"");
            }
        }
        if (stagesText == null) {
            if (stages > 1) throw new FrugalException("stash policy: " + stages + " stages need \"stages = ...\" or \"trigger = plateau ...\"");
            return PrecisionSchedule.milestones(0);
        }
        String[] parts = stagesText.split(",");
        if (parts.length != stages) {
            throw new FrugalException("stash policy: " + parts.length + " stage starts for " + stages + " stages of formats");
        }
        int[] starts = new int[parts.length];
        for (int i = 0; i < parts.length; i++) {
            String p = parts[i].trim();
            try {
                starts[i] = p.endsWith("%") ? (int) Math.round(Double.parseDouble(p.substring(0, p.length() - 1)) / 100 * totalSteps)
                        : Integer.parseInt(p);
            } catch (NumberFormatException e) {
                throw new FrugalException("stash policy: bad stage start \"" + p + "\" (a step or a percentage of the run)");
            }
        }
        return PrecisionSchedule.milestones(starts);
    }

    /** softmax_stats' value: keep or recompute, one per stage. */
    private static List<Boolean> softmaxChoices(String value) {
        List<Boolean> list = new ArrayList<>();
        for (String v : value.split(",")) {
            String c = v.trim().toLowerCase(Locale.ROOT);
            if (!c.equals("keep") && !c.equals("recompute")) {
                throw new FrugalException("softmax_stats is keep or recompute (per stage), got \"" + v.trim() + "\"");
            }
            list.add(c.equals("recompute"));
        }
        return list;
    }

    private static List<QuantFormat> keepList() {
        return Arrays.asList((QuantFormat) null);
    }

    private static List<QuantFormat> formats(String value) {
        List<QuantFormat> list = new ArrayList<>();
        for (String f : value.split(",")) list.add(f.trim().equalsIgnoreCase("keep") ? null : QuantFormat.parse(f));
        return list;
    }

    private static <T> T atStage(List<T> list, int stage, int stages, String what) {
        if (list.size() == 1) return list.get(0);
        if (list.size() != stages) throw new FrugalException(what + " has " + list.size() + " formats where others have " + stages + " stages");
        return list.get(stage);
    }

    /** The stage in force for the step about to run; called once per step before its forward. */
    public void beginStep(int step) {
        stage = schedule.stageAt(step);
    }

    public int stage() {
        return stage;
    }

    public PrecisionSchedule schedule() {
        return schedule;
    }

    /** The format of a kind in the current stage; null means keep. */
    public QuantFormat format(StashKind kind) {
        return kindFormats.get(stage).get(kind);
    }

    /** The format of a GEMM operand point in the current stage; null means keep. */
    public QuantFormat format(QuantPoint point) {
        return pointFormats.get(stage).get(point);
    }

    /**
     * Whether attention's backward in the current stage reruns the forward on the q, k, v read back for its log-sum-exp
     * (and the output it needs), rather than reading the forward's own from the stash (see the class comment).
     */
    public boolean recomputesSoftmax() {
        return softmaxRecomputed.get(stage);
    }

    /** The most bytes that n values of this kind take in any stage (what its stash buffer is allocated for). */
    public long maxQuantizedBytes(StashKind kind, long n) {
        long max = 0;
        for (Map<StashKind, QuantFormat> k : kindFormats) if (k.get(kind) != null) max = Math.max(max, k.get(kind).bytes(n));
        return max;
    }

    /** Whether the current stage rounds anything stochastically (fresh random bits every step). */
    public boolean roundsStochastically() {
        return kindFormats.get(stage).values().stream().anyMatch(StashPolicy::stochastic)
                || pointFormats.get(stage).values().stream().anyMatch(StashPolicy::stochastic);
    }

    private static boolean stochastic(QuantFormat f) {
        return f != null && f.rounding() == QuantFormat.Rounding.STOCHASTIC;
    }

    /** Whether anything is ever quantized. */
    public boolean quantizes() {
        for (int s = 0; s < kindFormats.size(); s++) {
            if (kindFormats.get(s).values().stream().anyMatch(f -> f != null)) return true;
            if (pointFormats.get(s).values().stream().anyMatch(f -> f != null)) return true;
        }
        return false;
    }

    /** The text this policy was parsed from. */
    public String text() {
        return text;
    }

    /** One line: the formats of q0–q3 in the current stage, as the paper writes configurations, and whether softmax is recomputed. */
    public String describeStage() {
        StringBuilder s = new StringBuilder("stage " + stage + " [");
        for (QuantPoint p : QuantPoint.values()) {
            QuantFormat f = format(p);
            s.append(p.ordinal() > 0 ? ", " : "").append(f == null ? "keep" : f.toString());
        }
        return s.append("]").append(recomputesSoftmax() ? ", softmax recomputed" : "").toString();
    }
}
