package frugal.train;

import frugal.backend.Backend;
import frugal.backend.cpu.CpuBackend;
import frugal.data.ByteTokenizer;
import frugal.model.ModelFiles;
import frugal.model.Transformer;
import frugal.nn.Context;
import frugal.tensor.DType;
import frugal.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** {@code frugal eval} on a text file: the mean next-token loss over every token but the first, and its perplexity. */
class EvalTest {
    private static final int SEQ = 16, BATCH = 3;

    @TempDir
    Path dir;

    @Test
    void lossOnATextFileIsTheMeanNegativeLogLikelihood() throws IOException {
        long seed = new Random().nextLong();
        Random random = new Random(seed);
        Path out = dir.resolve("run");
        TrainFixtures.train("--config", TrainFixtures.config(dir).toString(), "--tokenizer", "byte",
                "--data", TrainFixtures.corpus(dir, random, 3000).toString(), "-b", "2", "-t", "16", "-n", "5",
                "--seed", Long.toString(seed), "-o", out.toString());
        // 7 windows: not a multiple of the batch, so the last batch is partial.
        StringBuilder text = new StringBuilder();
        while (text.length() < 7 * SEQ + 1) text.append((char) ('a' + random.nextInt(26))).append(random.nextBoolean() ? "é " : " ");
        Path file = dir.resolve("test.txt");
        Files.writeString(file, text, StandardCharsets.UTF_8);
        int[] tokens = ByteTokenizer.instance().encode(text.toString());
        int windows = (tokens.length - 1) / SEQ;

        double expected = meanNegativeLogLikelihood(out.resolve("model"), tokens, windows);
        String printed = TrainFixtures.output("eval", "--model", out.resolve("model").toString(), "--data", file.toString(),
                "-t", Integer.toString(SEQ), "-b", Integer.toString(BATCH), "--device", "cpu");
        Matcher m = Pattern.compile("([\\d,]+) tokens, loss ([\\d.]+), perplexity ([\\d.]+)").matcher(printed);
        assertTrue(m.find(), printed);
        assertEquals(windows * SEQ, Integer.parseInt(m.group(1).replace(",", "")), printed);
        assertEquals(expected, Double.parseDouble(m.group(2)), 1e-4, "seed " + seed + ": " + printed);
        assertEquals(Math.exp(expected), Double.parseDouble(m.group(3)), 1e-3 * Math.exp(expected), printed);

        try (Backend ops = new CpuBackend()) {
            Evaluator.Result r = new Evaluator(ModelFiles.load(out.resolve("model"), ops), ops).evaluate(tokens, BATCH, SEQ, 0);
            assertEquals(expected, r.loss(), 1e-5 * expected, "seed " + seed);
            assertEquals((long) windows * SEQ, r.tokens());
        }
    }

    /** −log p(next token) averaged over windows of SEQ + 1 tokens that share their boundary tokens, in float64. */
    private static double meanNegativeLogLikelihood(Path model, int[] tokens, int windows) {
        try (Backend ops = new CpuBackend()) {
            Transformer m = ModelFiles.load(model, ops);
            int vocab = m.config().vocabSize();
            Context ctx = Context.of(ops);
            Tensor ids = ops.allocate(DType.I32, SEQ);
            float[] logits = new float[SEQ * vocab];
            double total = 0;
            for (int w = 0; w < windows; w++) {
                ops.upload(ids, MemorySegment.ofArray(Arrays.copyOfRange(tokens, w * SEQ, w * SEQ + SEQ)));
                ops.download(m.forward(ctx, ids, null, null, 1, SEQ, 0f), MemorySegment.ofArray(logits));
                for (int t = 0; t < SEQ; t++) {
                    double max = Double.NEGATIVE_INFINITY, sum = 0;
                    for (int v = 0; v < vocab; v++) max = Math.max(max, logits[t * vocab + v]);
                    for (int v = 0; v < vocab; v++) sum += Math.exp(logits[t * vocab + v] - max);
                    total += max + Math.log(sum) - logits[t * vocab + tokens[w * SEQ + t + 1]];
                }
            }
            return total / ((long) windows * SEQ);
        }
    }
}
