package frugal.cli;

import frugal.FrugalException;
import picocli.CommandLine;
import picocli.CommandLine.Command;

import java.io.PrintWriter;

/**
 * The {@code frugal} command: train, eval, generate, bench. Every failure is printed as one line,
 * {@code frugal: <file or step>: <problem>}; with the environment variable {@code FRUGAL_DEBUG=1} the stack
 * trace follows it.
 */
@Command(name = "frugal", mixinStandardHelpOptions = true, version = "frugal 0.1.0",
        description = "Trains and evaluates GPT-2 and Llama models on the CPU (Vector API) and NVIDIA GPUs.",
        subcommands = {TrainCommand.class, EvalCommand.class, GenerateCommand.class, BenchCommand.class})
public final class Main implements Runnable {
    static final String DEBUG_VARIABLE = "FRUGAL_DEBUG";

    public static void main(String[] args) {
        System.exit(run(args));
    }

    /** Runs the command line and returns its exit code (1 for a failure, 2 for bad usage). */
    public static int run(String... args) {
        boolean debug = "1".equals(System.getenv(DEBUG_VARIABLE));
        CommandLine cli = new CommandLine(new Main());
        cli.setExecutionExceptionHandler((e, cmd, parsed) -> report(e, cmd.getErr(), debug));
        try {
            return cli.execute(args);
        } catch (OutOfMemoryError e) {
            // picocli passes Errors through; running out of memory is usually a model or batch too large, not a bug.
            return report(e, cli.getErr(), debug);
        }
    }

    /**
     * Prints {@code failure} as one line and returns exit code 1. A {@link FrugalException} already says what to
     * fix; anything else is a bug or an unforeseen input, reported by its type and message.
     */
    static int report(Throwable failure, PrintWriter err, boolean debug) {
        String message = failure instanceof FrugalException ? failure.getMessage()
                : failure instanceof OutOfMemoryError ? "out of memory (" + failure.getMessage()
                + "): use a smaller model, batch or sequence length, or give the JVM more memory (-Xmx)"
                : "internal error: " + failure + (debug ? "" : " (set " + DEBUG_VARIABLE + "=1 for the stack trace)");
        err.println("frugal: " + message);
        if (debug) failure.printStackTrace(err);
        err.flush();
        return 1;
    }

    @Override
    public void run() {
        new CommandLine(this).usage(System.out);
    }
}
