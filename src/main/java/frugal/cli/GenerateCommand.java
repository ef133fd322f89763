package frugal.cli;

import frugal.FrugalException;
import frugal.backend.Backend;
import frugal.backend.Backends;
import frugal.data.StreamDecoder;
import frugal.data.Tokenizer;
import frugal.model.Transformer;
import frugal.train.Generator;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Path;

/** {@code frugal generate}: sample a continuation of a prompt, printed as the tokens come. */
@Command(name = "generate", mixinStandardHelpOptions = true, description = "Sample text from a model.")
final class GenerateCommand implements Runnable {
    @Option(names = "--model", required = true, description = "model folder or checkpoint")
    Path model;
    @Option(names = {"-p", "--prompt"}, defaultValue = "", description = "text to continue (default: start of a document)")
    String prompt;
    @Option(names = {"-n", "--tokens"}, defaultValue = "100", description = "tokens to sample (default: ${DEFAULT-VALUE})")
    int tokens;
    @Option(names = "--temperature", defaultValue = "0.8", description = "0 = greedy (default: ${DEFAULT-VALUE})")
    float temperature;
    @Option(names = "--top-k", defaultValue = "40", description = "sample among the k most likely, 0 = all (default: ${DEFAULT-VALUE})")
    int topK;
    @Option(names = "--seed", defaultValue = "1337", description = "sampling seed (default: ${DEFAULT-VALUE})")
    long seed;
    @Option(names = "--tokenizer", description = "gpt2 or byte (default: the one the model was trained with)")
    String tokenizer;
    @Option(names = "--device", defaultValue = "auto", description = "cpu, cuda or auto (default: ${DEFAULT-VALUE})")
    String device;

    @Override
    public void run() {
        if (tokens < 0) throw new FrugalException("--tokens must be 0 or more, got " + tokens);
        Tokenizer tok = ModelArgument.tokenizer(model, tokenizer);
        try (Backend ops = Backends.create(device)) {
            Transformer m = ModelArgument.load(model, tok, ops);
            int[] ids = prompt.isEmpty() ? new int[]{tok.endOfText()} : tok.encode(prompt);
            System.out.print(prompt);
            StreamDecoder text = new StreamDecoder(tok);
            new Generator(m, ops).generate(ids, tokens, temperature, topK, seed, t -> {
                System.out.print(text.next(t));
                System.out.flush();
            });
            System.out.println(text.flush());
        }
    }
}
