package frugal.cli;

import frugal.FrugalException;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/** The {@code frugal} command: train, eval, generate, bench. */
@Command(name = "frugal", mixinStandardHelpOptions = true, version = "frugal 0.1.0",
        description = "Trains and evaluates GPT-2 and Llama models on the CPU (Vector API) and NVIDIA GPUs.",
        subcommands = {TrainCommand.class, EvalCommand.class, GenerateCommand.class, BenchCommand.class})
public final class Main implements Runnable {

    public static void main(String[] args) {
        System.exit(run(args));
    }

    /** Runs the command line and returns its exit code (1 for a user error, 2 for bad usage). */
    public static int run(String... args) {
        CommandLine cli = new CommandLine(new Main());
        cli.setExecutionExceptionHandler((e, cmd, parsed) -> {
            if (e instanceof FrugalException) {
                cmd.getErr().println("frugal: " + e.getMessage());
                return 1;
            }
            throw e;
        });
        return cli.execute(args);
    }

    @Override
    public void run() {
        new CommandLine(this).usage(System.out);
    }
}
