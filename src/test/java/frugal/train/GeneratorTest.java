package frugal.train;

import frugal.backend.Backend;
import frugal.backend.cpu.CpuBackend;
import frugal.data.ByteTokenizer;
import frugal.model.Init;
import frugal.model.ModelFiles;
import frugal.model.Transformer;
import frugal.nn.Context;
import frugal.tensor.DType;
import frugal.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Sampling: a seed fixes the text, top-k keeps to the k likeliest tokens, and top-k = 1 is greedy decoding. */
class GeneratorTest {
    private static final int TOKENS = 40; // longer than the model's 32 positions: the context window slides

    private final long seed = new Random().nextLong();

    @TempDir
    Path dir;

    @Test
    void aSeedFixesTheSampleAndTopOneIsGreedy() {
        try (Backend ops = new CpuBackend()) {
            Transformer model = new Transformer(TrainFixtures.TINY, ops);
            Init.initialize(model, ops, seed);
            Generator generator = new Generator(model, ops);
            int[] prompt = ByteTokenizer.instance().encode("int x = ");
            int[] a = generator.generate(prompt, TOKENS, 1f, 0, seed, t -> { });
            int[] b = generator.generate(prompt, TOKENS, 1f, 0, seed, t -> { });
            int[] c = generator.generate(prompt, TOKENS, 1f, 0, seed + 1, t -> { });
            assertArrayEquals(a, b, "seed " + seed + ": the same seed gives the same tokens");
            assertFalse(Arrays.equals(a, c), "seed " + seed + ": another seed gives other tokens");
            assertArrayEquals(prompt, Arrays.copyOf(a, prompt.length), "the prompt comes first");

            int[] topOne = generator.generate(prompt, TOKENS, 0.8f, 1, seed, t -> { });
            int[] greedy = generator.generate(prompt, TOKENS, 0f, 0, seed + 2, t -> { });
            assertArrayEquals(greedy, topOne, "seed " + seed + ": top-k 1 is greedy whatever the temperature and seed");
            assertArrayEquals(argmaxDecoding(model, ops, prompt), greedy, "seed " + seed + ": greedy picks the largest logit");
        }
    }

    /** Appends the token of the largest last-position logit, TOKENS times, over at most maxSeq tokens of context. */
    private static int[] argmaxDecoding(Transformer model, Backend ops, int[] prompt) {
        int maxSeq = model.config().maxSeq(), vocab = model.config().vocabSize();
        Context ctx = Context.of(ops);
        int[] tokens = Arrays.copyOf(prompt, prompt.length + TOKENS);
        for (int length = prompt.length; length < tokens.length; length++) {
            int start = Math.max(0, length - maxSeq), seq = length - start;
            Tensor ids = ops.allocate(DType.I32, seq);
            ops.upload(ids, MemorySegment.ofArray(Arrays.copyOfRange(tokens, start, length)));
            float[] logits = new float[seq * vocab];
            ops.download(model.forward(ctx, ids, null, null, 1, seq, 0f), MemorySegment.ofArray(logits));
            int best = 0;
            for (int v = 1; v < vocab; v++) if (logits[(seq - 1) * vocab + v] > logits[(seq - 1) * vocab + best]) best = v;
            tokens[length] = best;
        }
        return tokens;
    }

    @Test
    void topKSamplesOnlyAmongTheKLargest() {
        Random random = new Random(seed);
        float[] logits = new float[300];
        for (int i = 0; i < logits.length; i++) logits[i] = (float) random.nextGaussian();
        int k = 1 + random.nextInt(10);
        float[] sorted = logits.clone();
        Arrays.sort(sorted);
        float kth = sorted[sorted.length - k];
        for (int draw = 0; draw < 2000; draw++) {
            int id = Generator.sample(logits, 1.5f, k, random);
            assertTrue(logits[id] >= kth, "seed " + seed + ": token " + id + " is outside the top " + k);
        }
    }

    @Test
    void generateCommandIsReproducible() throws IOException {
        Path model = dir.resolve("model");
        try (Backend ops = new CpuBackend()) {
            Transformer m = new Transformer(TrainFixtures.TINY, ops);
            Init.initialize(m, ops, seed);
            ModelFiles.save(m, ops, model);
        }
        Files.writeString(model.resolve("tokenizer.txt"), "byte\n");
        String[] args = {"generate", "--model", model.toString(), "-p", "class ", "-n", "30", "--seed", Long.toString(seed), "--device", "cpu"};
        String first = TrainFixtures.output(args), second = TrainFixtures.output(args);
        assertEquals(first, second, "seed " + seed);
        assertTrue(first.startsWith("class "), first);
        // The run folder (what train --out names) stands for its model/ folder.
        args[2] = dir.toString();
        assertEquals(first, TrainFixtures.output(args), "seed " + seed + ": generate from the run folder");
    }
}
