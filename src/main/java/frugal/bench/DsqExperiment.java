package frugal.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import frugal.FrugalException;
import frugal.train.StashOptions;
import frugal.train.TrainOptions;
import frugal.train.Trainer;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.style.lines.SeriesLines;
import org.knowm.xchart.style.markers.SeriesMarkers;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The experiment of DSQ: one model trained with the same seed and data under each stash setting (keep, the default
 * DSQ schedule, fixed 8-bit and 4-bit BFP, DSQ with full-precision GEMM operands, and two DSQ variants with stochastic
 * rounding: docs/experiments/dsq-g8.conf and the more aggressive dsq-sr234.conf), for one or more seeds, then a table
 * and PNG plots into docs/experiments/ named {@code dsq-<device>[-<preset>]-…}. Settings whose run already finished
 * under the runs folder are not trained again (delete the folder to redo one).
 *
 * <p>Run: {@code java --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -cp target/frugal.jar
 * frugal.bench.DsqExperiment [runs-folder [docs-folder [steps]]] [--device cuda] [--preset gpt2-124m] [--batch 8]
 * [--seq 512] [--data FILE] [--seeds 1337,1338] [--settings keep,dsq,bfp8,bfp4]} (defaults: runs/dsq,
 * docs/experiments, 300 steps, the tiny preset on the CPU at batch 8 × 64, the JDK's sources, seed 1337, every
 * setting).
 */
public final class DsqExperiment {
    /** A stash setting of the comparison: its name in tables and plots, and how the run is told. */
    record Setting(String name, StashOptions stash) {
    }

    private static final List<Setting> SETTINGS = List.of(
            new Setting("keep", StashOptions.KEEP),
            new Setting("dsq", new StashOptions("dsq", null)),
            new Setting("bfp8", new StashOptions("bfp8", null)),
            new Setting("bfp4", new StashOptions("bfp4", null)),
            new Setting("dsq-stash", new StashOptions("keep", Path.of("docs/experiments/dsq-stash.conf"))),
            new Setting("dsq-stash-qkv8", new StashOptions("keep", Path.of("docs/experiments/dsq-stash-qkv8.conf"))),
            new Setting("dsq-g8", new StashOptions("keep", Path.of("docs/experiments/dsq-g8.conf"))),
            new Setting("dsq-sr234", new StashOptions("keep", Path.of("docs/experiments/dsq-sr234.conf"))));

    /** The command line: where runs and reports go, and what is trained. */
    record Plan(Path runs, Path docs, int steps, String device, String preset, int batch, int seq, Path data,
                List<Long> seeds, List<Setting> settings) {
        static Plan parse(String[] args) {
            List<String> positional = new ArrayList<>();
            Map<String, String> options = new HashMap<>();
            for (int i = 0; i < args.length; i++) {
                if (args[i].startsWith("--")) {
                    if (i + 1 >= args.length) throw new FrugalException(args[i] + " needs a value");
                    options.put(args[i].substring(2), args[++i]);
                } else {
                    positional.add(args[i]);
                }
            }
            String preset = options.getOrDefault("preset", "tiny");
            List<String> names = List.of(options.getOrDefault("settings", String.join(",", SETTINGS.stream().map(Setting::name).toList())).split(","));
            List<Setting> settings = names.stream().map(n -> SETTINGS.stream().filter(s -> s.name().equals(n)).findFirst()
                    .orElseThrow(() -> new FrugalException("unknown setting " + n))).toList();
            return new Plan(Path.of(positional.size() > 0 ? positional.get(0) : "runs/dsq"),
                    Path.of(positional.size() > 1 ? positional.get(1) : "docs/experiments"),
                    positional.size() > 2 ? Integer.parseInt(positional.get(2)) : 300,
                    options.getOrDefault("device", "cpu"), preset,
                    Integer.parseInt(options.getOrDefault("batch", "8")), Integer.parseInt(options.getOrDefault("seq", "64")),
                    options.containsKey("data") ? Path.of(options.get("data")) : null,
                    List.of(options.getOrDefault("seeds", "1337").split(",")).stream().map(Long::parseLong).toList(), settings);
        }

        /** File name prefix of this plan's outputs: dsq-cpu (the tiny preset on the CPU), dsq-cuda-gpt2-124m, … */
        String prefix() {
            return "dsq-" + device + (preset.equals("tiny") ? "" : "-" + preset);
        }

        Path runFolder(Setting setting, long seed) {
            return runs.resolve(prefix()).resolve(setting.name() + (seeds.size() > 1 || seed != 1337 ? "-seed" + seed : ""));
        }
    }

    private DsqExperiment() {
    }

    /** What one run comes to: the figures of docs/experiments/dsq.md. */
    record Summary(String setting, long seed, double finalValLoss, double meanStashBytesPerToken, double finalStashBytesPerToken,
                   double bf16BytesPerToken, long peakStashBytes, double trafficRatio, double bitOpsRatio, double medianStepMs,
                   long peakMemoryBytes) {
    }

    public static void main(String[] args) throws IOException {
        System.setProperty("java.awt.headless", "true");
        Plan plan = Plan.parse(args);
        Files.createDirectories(plan.docs());
        List<Summary> summaries = new ArrayList<>();
        List<List<JsonNode>> histories = new ArrayList<>();
        for (long seed : plan.seeds()) {
            for (Setting setting : plan.settings()) {
                Path out = plan.runFolder(setting, seed);
                if (!finished(out, plan.steps())) {
                    TrainOptions o = new TrainOptions(plan.preset(), null, null, plan.data(), "gpt2", 8_000_000L, plan.batch(), plan.seq(),
                            plan.steps(), 1, null, 0.1f, null, 0.1f, 1f, null, 8, seed, out, false, 100, null, 0, plan.device(), false);
                    new Trainer(o, System.out).withStash(setting.stash()).run();
                }
                List<JsonNode> h = read(out.resolve("metrics.jsonl"));
                if (seed == plan.seeds().get(0)) {
                    Files.copy(out.resolve("metrics.jsonl"), plan.docs().resolve(plan.prefix() + "-" + setting.name() + ".jsonl"),
                            StandardCopyOption.REPLACE_EXISTING);
                    histories.add(h);
                }
                summaries.add(summarize(setting.name(), seed, h));
            }
        }
        String table = table(summaries) + (plan.seeds().size() > 1 ? "\n" + seedTable(summaries, plan) : "");
        Files.writeString(plan.docs().resolve(plan.prefix() + "-summary.md"), table);
        System.out.print(table);
        String model = plan.preset() + " on " + plan.device();
        plot(plan, plan.docs().resolve(plan.prefix() + "-loss.png"), model + ": training loss (mean of 10 steps) and validation loss", "loss",
                histories, "loss", true);
        plot(plan, plan.docs().resolve(plan.prefix() + "-stash.png"), model + ": stash bytes per token (bf16 stash of the same tensors dashed)",
                "bytes/token", histories, "stash_bytes_per_token", false);
    }

    private static boolean finished(Path out, int steps) throws IOException {
        Path metrics = out.resolve("metrics.jsonl");
        if (!Files.exists(metrics)) return false;
        List<JsonNode> h = read(metrics);
        return !h.isEmpty() && h.get(h.size() - 1).get("step").asInt() == steps && h.get(h.size() - 1).has("val_loss");
    }

    private static List<JsonNode> read(Path file) throws IOException {
        ObjectMapper json = new ObjectMapper();
        return Files.readAllLines(file).stream().map(l -> {
            try {
                return json.readTree(l);
            } catch (IOException e) {
                throw new UncheckedIOException(file + ": " + e.getMessage(), e);
            }
        }).toList();
    }

    static Summary summarize(String setting, long seed, List<JsonNode> h) {
        JsonNode last = h.get(h.size() - 1);
        double[] ms = h.stream().mapToDouble(r -> r.get("ms").asDouble()).sorted().toArray();
        return new Summary(setting, seed, last.get("val_loss").asDouble(),
                h.stream().mapToDouble(r -> r.get("stash_bytes_per_token").asDouble()).average().orElseThrow(),
                last.get("stash_bytes_per_token").asDouble(), last.get("stash_bf16_bytes_per_token").asDouble(),
                h.stream().mapToLong(r -> r.get("stash_peak_bytes").asLong()).max().orElseThrow(),
                h.stream().mapToDouble(r -> r.get("traffic_16bit_bytes_per_token").asDouble() / r.get("traffic_bytes_per_token").asDouble()).average().orElseThrow(),
                h.stream().mapToDouble(r -> r.get("bit_ops_16bit_per_token").asDouble() / r.get("bit_ops_per_token").asDouble()).average().orElseThrow(),
                ms[ms.length / 2], h.stream().mapToLong(r -> r.has("peak_memory_bytes") ? r.get("peak_memory_bytes").asLong() : -1).max().orElseThrow());
    }

    /** The first seed's runs, each against that seed's keep run. */
    static String table(List<Summary> summaries) {
        Summary keep = summaries.get(0);
        StringBuilder t = new StringBuilder("""
                | stash | final val loss | vs keep | stash bytes/token (mean over run) | at the end | bf16 stash bytes/token | × smaller than bf16 (mean) | × smaller than keep's stash (mean) | peak stash | traffic × less than 16-bit | bit-weighted ops × less than 16-bit | median step | peak device memory |
                |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
                """);
        for (Summary s : summaries) {
            if (s.seed() != keep.seed()) break;
            t.append(String.format("| %s | %.4f | %+.2f%% | %.0f | %.0f | %.0f | %.2f× | %.2f× | %.2f MiB | %.2f× | %.2f× | %.1f ms | %s |%n", s.setting(),
                    s.finalValLoss(), 100 * (s.finalValLoss() / keep.finalValLoss() - 1), s.meanStashBytesPerToken(),
                    s.finalStashBytesPerToken(), s.bf16BytesPerToken(), s.bf16BytesPerToken() / s.meanStashBytesPerToken(),
                    keep.meanStashBytesPerToken() / s.meanStashBytesPerToken(),
                    s.peakStashBytes() / 1048576.0, s.trafficRatio(), s.bitOpsRatio(), s.medianStepMs(),
                    s.peakMemoryBytes() < 0 ? "" : String.format("%.2f GiB", s.peakMemoryBytes() / 1073741824.0)));
        }
        return t.toString();
    }

    /** Final validation loss per seed, each setting against the keep run of the same seed, with the mean over seeds. */
    static String seedTable(List<Summary> summaries, Plan plan) {
        StringBuilder t = new StringBuilder("| stash | " + String.join(" | ", plan.seeds().stream().map(s -> "seed " + s).toList())
                + " | mean vs keep |\n|---|" + "---:|".repeat(plan.seeds().size() + 1) + "\n");
        for (Setting setting : plan.settings()) {
            t.append("| ").append(setting.name()).append(" | ");
            double relative = 0;
            for (long seed : plan.seeds()) {
                Summary s = find(summaries, setting.name(), seed), keep = find(summaries, "keep", seed);
                double r = keep == null ? Double.NaN : s.finalValLoss() / keep.finalValLoss() - 1;
                relative += r / plan.seeds().size();
                t.append(String.format("%.4f (%+.2f%%) | ", s.finalValLoss(), 100 * r));
            }
            t.append(String.format("%+.2f%% |%n", 100 * relative));
        }
        return t.toString();
    }

    private static Summary find(List<Summary> summaries, String setting, long seed) {
        return summaries.stream().filter(s -> s.setting().equals(setting) && s.seed() == seed).findFirst().orElse(null);
    }

    private static void plot(Plan plan, Path file, String title, String yTitle, List<List<JsonNode>> histories, String field,
                             boolean loss) throws IOException {
        XYChart chart = new XYChartBuilder().width(1000).height(560).title(title).xAxisTitle("step").yAxisTitle(yTitle).build();
        for (int i = 0; i < plan.settings().size(); i++) {
            List<JsonNode> h = histories.get(i);
            double[] x = h.stream().mapToDouble(r -> r.get("step").asDouble()).toArray();
            double[] y = h.stream().mapToDouble(r -> r.get(field).asDouble()).toArray();
            if (loss) y = movingMean(y, 10);
            chart.addSeries(plan.settings().get(i).name() + (loss ? " train" : ""), x, y).setMarker(SeriesMarkers.NONE);
            if (loss) {
                List<JsonNode> evals = h.stream().filter(r -> r.has("val_loss")).toList();
                chart.addSeries(plan.settings().get(i).name() + " val", evals.stream().mapToDouble(r -> r.get("step").asDouble()).toArray(),
                        evals.stream().mapToDouble(r -> r.get("val_loss").asDouble()).toArray());
            } else if (i == 0) {
                chart.addSeries("bf16 stash", x, h.stream().mapToDouble(r -> r.get("stash_bf16_bytes_per_token").asDouble()).toArray())
                        .setMarker(SeriesMarkers.NONE).setLineStyle(SeriesLines.DASH_DASH);
            }
        }
        BitmapEncoder.saveBitmap(chart, file.toString(), BitmapEncoder.BitmapFormat.PNG);
    }

    private static double[] movingMean(double[] y, int window) {
        double[] out = new double[y.length];
        double sum = 0;
        for (int i = 0; i < y.length; i++) {
            sum += y[i] - (i >= window ? y[i - window] : 0);
            out[i] = sum / Math.min(i + 1, window);
        }
        return out;
    }
}
