package frugal.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import frugal.cli.Main;
import frugal.data.ByteTokenizer;
import frugal.data.TokenFile;
import frugal.model.ModelConfig;
import frugal.model.ModelFiles;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** What the trainer tests share: a small model, a random corpus, and running {@code frugal train} in-process. */
final class TrainFixtures {
    /** GPT-2 shape over the byte vocabulary, small enough that a step takes milliseconds. */
    static final ModelConfig TINY = ModelConfig.gpt2(257, 32, 32, 2, 2);
    private static final String[] WORDS = {"public", "static", "void", "int", "return", "class", "final", "new",
            "if", "else", "for", "while", "{", "}", "(", ")", ";", "=", "+", "x", "y", "i", "0", "1", "\n", "é"};

    private TrainFixtures() {
    }

    /** Random words (one of them two bytes long in UTF-8), tokenized to bytes and written as a token file. */
    static Path corpus(Path dir, Random random, int approximateBytes) {
        StringBuilder text = new StringBuilder();
        while (text.length() < approximateBytes) text.append(WORDS[random.nextInt(WORDS.length)]).append(' ');
        int[] ids = ByteTokenizer.instance().encode(text.toString());
        Path file = dir.resolve("corpus" + TokenFile.EXTENSION);
        TokenFile.write(file, ByteTokenizer.instance(), sink -> sink.accept(ids));
        return file;
    }

    /** {@link #TINY} as a config.json for {@code --config}. */
    static Path config(Path dir) {
        Path file = dir.resolve("config.json");
        ModelFiles.writeConfig(TINY, file);
        return file;
    }

    /** Runs {@code frugal train} on the CPU without a progress bar or sample, plus {@code args}; asserts success. */
    static void train(String... args) {
        List<String> all = new ArrayList<>(List.of("train", "--device", "cpu", "--no-progress", "--sample-tokens", "0"));
        all.addAll(List.of(args));
        assertEquals(0, Main.run(all.toArray(String[]::new)), "frugal " + String.join(" ", all));
    }

    /** The records of a metrics.jsonl file, in order. */
    static List<JsonNode> metrics(Path file) {
        ObjectMapper json = new ObjectMapper();
        try {
            List<JsonNode> records = new ArrayList<>();
            for (String line : Files.readAllLines(file)) records.add(json.readTree(line));
            return records;
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Runs a command line in-process and returns what it printed; asserts success. */
    static String output(String... args) {
        PrintStream saved = System.out;
        ByteArrayOutputStream captured = new ByteArrayOutputStream();
        System.setOut(new PrintStream(captured, true, StandardCharsets.UTF_8));
        try {
            assertEquals(0, Main.run(args), String.join(" ", args));
        } finally {
            System.setOut(saved);
        }
        return captured.toString(StandardCharsets.UTF_8);
    }
}
