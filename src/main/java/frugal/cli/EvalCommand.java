package frugal.cli;

import frugal.FrugalException;
import frugal.backend.Backend;
import frugal.backend.Backends;
import frugal.data.Corpus;
import frugal.data.Tokenizer;
import frugal.model.Transformer;
import frugal.train.Evaluator;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Path;

/** {@code frugal eval}: loss and perplexity of a model on a text file. */
@Command(name = "eval", mixinStandardHelpOptions = true, description = "Loss and perplexity on a text file (e.g. WikiText-2 test).")
final class EvalCommand implements Runnable {
    @Option(names = "--model", required = true, description = "model folder or checkpoint")
    Path model;
    @Option(names = "--data", required = true, description = "text file to score (a folder or .zip: its text files one after another)")
    Path data;
    @Option(names = "--tokenizer", description = "gpt2 or byte (default: the one the model was trained with)")
    String tokenizer;
    @Option(names = {"-t", "--seq"}, description = "window length (default: the model's positions, or the text's length if shorter)")
    Integer seq;
    @Option(names = {"-b", "--batch"}, defaultValue = "4", description = "windows per batch (default: ${DEFAULT-VALUE})")
    int batch;
    @Option(names = "--max-windows", defaultValue = "0", description = "score at most this many windows (0 = all)")
    int maxWindows;
    @Option(names = "--device", defaultValue = "auto", description = "cpu, cuda or auto (default: ${DEFAULT-VALUE})")
    String device;

    @Override
    public void run() {
        if (batch <= 0 || (seq != null && seq <= 0)) throw new FrugalException("--batch and --seq must be positive");
        Tokenizer tok = ModelArgument.tokenizer(model, tokenizer);
        StringBuilder text = new StringBuilder();
        Corpus.open(data, 0).read(text::append);
        int[] tokens = tok.encode(text.toString());
        try (Backend ops = Backends.create(device)) {
            Transformer m = ModelArgument.load(model, tok, ops);
            int window = seq != null ? seq : Math.min(m.config().maxSeq(), tokens.length - 1);
            m.config().checkSequence(window, model.toString());
            if (window < 1 || tokens.length < window + 1) {
                throw new FrugalException(data + ": " + tokens.length + " tokens, too few for one window of " + Math.max(window, 1)
                        + " (scoring needs one token more than the window)");
            }
            Evaluator.Result r = new Evaluator(m, ops).evaluate(tokens, batch, window, maxWindows);
            System.out.printf("%s: %,d tokens, loss %.4f, perplexity %.3f%n", data, r.tokens(), r.loss(), r.perplexity());
        }
    }
}
