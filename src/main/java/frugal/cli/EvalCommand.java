package frugal.cli;

import frugal.FrugalException;
import frugal.backend.Backend;
import frugal.backend.Backends;
import frugal.data.Tokenizer;
import frugal.model.Transformer;
import frugal.train.Evaluator;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** {@code frugal eval}: loss and perplexity of a model on a text file. */
@Command(name = "eval", mixinStandardHelpOptions = true, description = "Loss and perplexity on a text file (e.g. WikiText-2 test).")
final class EvalCommand implements Runnable {
    @Option(names = "--model", required = true, description = "model folder or checkpoint")
    Path model;
    @Option(names = "--data", required = true, description = "text file to score")
    Path data;
    @Option(names = "--tokenizer", description = "gpt2 or byte (default: the one the model was trained with)")
    String tokenizer;
    @Option(names = {"-t", "--seq"}, description = "window length (default: the model's positions)")
    Integer seq;
    @Option(names = {"-b", "--batch"}, defaultValue = "4", description = "windows per batch (default: ${DEFAULT-VALUE})")
    int batch;
    @Option(names = "--max-windows", defaultValue = "0", description = "score at most this many windows (0 = all)")
    int maxWindows;
    @Option(names = "--device", defaultValue = "auto", description = "cpu, cuda or auto (default: ${DEFAULT-VALUE})")
    String device;

    @Override
    public void run() {
        String text;
        try {
            text = Files.readString(data);
        } catch (IOException e) {
            throw new FrugalException(data + ": cannot read (" + e.getMessage() + ")", e);
        }
        if (text.isBlank()) throw new FrugalException(data + ": the file is empty");
        Tokenizer tok = ModelArgument.tokenizer(model, tokenizer);
        try (Backend ops = Backends.create(device)) {
            Transformer m = ModelArgument.load(model, ops);
            int window = seq != null ? seq : m.config().maxSeq();
            if (window > m.config().maxSeq()) {
                throw new FrugalException("sequence length " + window + " is longer than the model's " + m.config().maxSeq() + " positions");
            }
            int[] tokens = tok.encode(text);
            Evaluator.Result r = new Evaluator(m, ops).evaluate(tokens, batch, window, maxWindows);
            System.out.printf("%s: %,d tokens, loss %.4f, perplexity %.3f%n", data, r.tokens(), r.loss(), r.perplexity());
        }
    }
}
