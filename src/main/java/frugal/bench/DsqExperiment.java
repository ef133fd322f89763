package frugal.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
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
import java.util.List;

/**
 * The CPU experiment of DSQ: the tiny GPT preset trained with the same seed and data under each stash setting
 * (keep, the default DSQ schedule, fixed 8-bit and 4-bit BFP, and two DSQ variants with stochastic rounding:
 * docs/experiments/dsq-g8.conf and the more aggressive dsq-sr234.conf), then a table and PNG plots into
 * docs/experiments/.
 * Settings whose run already finished under the runs folder are not trained again (delete the folder to redo one).
 *
 * <p>Run: {@code java --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -cp target/frugal.jar
 * frugal.bench.DsqExperiment [runs-folder [docs-folder [steps]]]} (defaults runs/dsq, docs/experiments, 300).
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
            new Setting("dsq-g8", new StashOptions("keep", Path.of("docs/experiments/dsq-g8.conf"))),
            new Setting("dsq-sr234", new StashOptions("keep", Path.of("docs/experiments/dsq-sr234.conf"))));
    private static final long SEED = 1337;

    private DsqExperiment() {
    }

    /** What one run comes to: the figures of docs/experiments/dsq.md. */
    record Summary(String setting, double finalValLoss, double meanStashBytesPerToken, double finalStashBytesPerToken,
                   double bf16BytesPerToken, long peakStashBytes, double trafficRatio, double bitOpsRatio, double medianStepMs) {
    }

    public static void main(String[] args) throws IOException {
        System.setProperty("java.awt.headless", "true");
        Path runs = Path.of(args.length > 0 ? args[0] : "runs/dsq"), docs = Path.of(args.length > 1 ? args[1] : "docs/experiments");
        int steps = args.length > 2 ? Integer.parseInt(args[2]) : 300;
        Files.createDirectories(docs);
        List<Summary> summaries = new ArrayList<>();
        List<List<JsonNode>> histories = new ArrayList<>();
        for (Setting setting : SETTINGS) {
            String s = setting.name();
            Path out = runs.resolve(s);
            if (!finished(out, steps)) {
                TrainOptions o = new TrainOptions("tiny", null, null, null, "gpt2", 8_000_000L, 8, 64, steps, 1, null, 0.1f,
                        null, 0.1f, 1f, null, 8, SEED, out, false, 100, null, 0, "cpu", false);
                new Trainer(o, System.out).withStash(setting.stash()).run();
            }
            List<JsonNode> h = read(out.resolve("metrics.jsonl"));
            Files.copy(out.resolve("metrics.jsonl"), docs.resolve("dsq-cpu-" + s + ".jsonl"), StandardCopyOption.REPLACE_EXISTING);
            histories.add(h);
            summaries.add(summarize(s, h));
        }
        String table = table(summaries);
        Files.writeString(docs.resolve("dsq-cpu-summary.md"), table);
        System.out.print(table);
        plot(docs.resolve("dsq-cpu-loss.png"), "Tiny GPT on CPU: training loss (mean of 10 steps) and validation loss", "loss", histories, "loss", true);
        plot(docs.resolve("dsq-cpu-stash.png"), "Stash bytes per token (bf16 stash of the same tensors dashed)", "bytes/token", histories,
                "stash_bytes_per_token", false);
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

    static Summary summarize(String setting, List<JsonNode> h) {
        JsonNode last = h.get(h.size() - 1);
        double[] ms = h.stream().mapToDouble(r -> r.get("ms").asDouble()).sorted().toArray();
        return new Summary(setting, last.get("val_loss").asDouble(),
                h.stream().mapToDouble(r -> r.get("stash_bytes_per_token").asDouble()).average().orElseThrow(),
                last.get("stash_bytes_per_token").asDouble(), last.get("stash_bf16_bytes_per_token").asDouble(),
                h.stream().mapToLong(r -> r.get("stash_peak_bytes").asLong()).max().orElseThrow(),
                h.stream().mapToDouble(r -> r.get("traffic_16bit_bytes_per_token").asDouble() / r.get("traffic_bytes_per_token").asDouble()).average().orElseThrow(),
                h.stream().mapToDouble(r -> r.get("bit_ops_16bit_per_token").asDouble() / r.get("bit_ops_per_token").asDouble()).average().orElseThrow(),
                ms[ms.length / 2]);
    }

    static String table(List<Summary> summaries) {
        Summary keep = summaries.get(0);
        StringBuilder t = new StringBuilder("""
                | stash | final val loss | vs keep | stash bytes/token (mean over run) | at the end | bf16 stash bytes/token | × smaller than bf16 (mean) | peak stash | traffic × less than 16-bit | bit-weighted ops × less than 16-bit | median step |
                |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
                """);
        for (Summary s : summaries) {
            t.append(String.format("| %s | %.4f | %+.2f%% | %.0f | %.0f | %.0f | %.2f× | %.2f MiB | %.2f× | %.2f× | %.0f ms |%n", s.setting(),
                    s.finalValLoss(), 100 * (s.finalValLoss() / keep.finalValLoss() - 1), s.meanStashBytesPerToken(),
                    s.finalStashBytesPerToken(), s.bf16BytesPerToken(), s.bf16BytesPerToken() / s.meanStashBytesPerToken(),
                    s.peakStashBytes() / 1048576.0, s.trafficRatio(), s.bitOpsRatio(), s.medianStepMs()));
        }
        return t.toString();
    }

    private static void plot(Path file, String title, String yTitle, List<List<JsonNode>> histories, String field, boolean loss) throws IOException {
        XYChart chart = new XYChartBuilder().width(1000).height(560).title(title).xAxisTitle("step").yAxisTitle(yTitle).build();
        for (int i = 0; i < SETTINGS.size(); i++) {
            List<JsonNode> h = histories.get(i);
            double[] x = h.stream().mapToDouble(r -> r.get("step").asDouble()).toArray();
            double[] y = h.stream().mapToDouble(r -> r.get(field).asDouble()).toArray();
            if (loss) y = movingMean(y, 10);
            chart.addSeries(SETTINGS.get(i).name() + (loss ? " train" : ""), x, y).setMarker(SeriesMarkers.NONE);
            if (loss) {
                List<JsonNode> evals = h.stream().filter(r -> r.has("val_loss")).toList();
                chart.addSeries(SETTINGS.get(i).name() + " val", evals.stream().mapToDouble(r -> r.get("step").asDouble()).toArray(),
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
