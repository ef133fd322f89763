package frugal;

/**
 * A failure the user can act on: bad input, a missing file, a diverged run. The message names the file,
 * tensor or step and says what was expected; the CLI prints it alone and exits non-zero.
 */
public class FrugalException extends RuntimeException {
    public FrugalException(String message) {
        super(message);
    }

    public FrugalException(String message, Throwable cause) {
        super(message, cause);
    }
}
