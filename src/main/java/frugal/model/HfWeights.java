package frugal.model;

import frugal.FrugalException;
import frugal.nn.Param;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Maps parameters to and from Hugging Face tensors: GPT-2's Conv1D weights are stored transposed
 * ([in, out]); Llama's q/k/v and gate/up projections are separate tensors stacked here along rows.
 */
public final class HfWeights {
    private HfWeights() {
    }

    /** Where Hugging Face tensors are read from; {@code source()} names the file in errors. */
    public interface Source {
        String source();

        boolean has(String name);

        int[] shape(String name);

        float[] read(String name);
    }

    /** A tensor under its Hugging Face name and shape. */
    public record Named(String name, int[] shape, float[] values) {
    }

    /** The parameter's values in its own layout, assembled from its Hugging Face tensors. */
    public static float[] toInternal(Param p, Source src) {
        int[] shape = p.value().shape();
        int cols = shape.length == 2 ? shape[1] : 1;
        float[] out = new float[(int) p.value().size()];
        int row = 0;
        for (Param.HfPart part : p.hfParts()) {
            int[] expected = p.hfTransposed() ? new int[]{cols, shape[0]}
                    : shape.length == 2 ? new int[]{part.rows(), cols} : new int[]{part.rows()};
            if (!src.has(part.name())) {
                throw new FrugalException(src.source() + ": tensor " + part.name() + " is missing (the config expects it with shape "
                        + Arrays.toString(expected) + ")");
            }
            int[] actual = src.shape(part.name());
            if (!Arrays.equals(actual, expected)) {
                throw new FrugalException(src.source() + ": tensor " + part.name() + " has shape " + Arrays.toString(actual)
                        + " but the config implies " + Arrays.toString(expected));
            }
            float[] values = src.read(part.name());
            requireFinite(values, src.source(), part.name());
            if (p.hfTransposed()) {
                transpose(values, cols, shape[0], out);
            } else {
                System.arraycopy(values, 0, out, row * cols, values.length);
            }
            row += part.rows();
        }
        return out;
    }

    /** NaN or infinity in stored values means a damaged file or a diverged run: either way nothing worth loading. */
    public static void requireFinite(float[] values, String source, String tensor) {
        for (int i = 0; i < values.length; i++) {
            if (!Float.isFinite(values[i])) {
                throw new FrugalException(source + ": tensor " + tensor + " holds " + values[i] + " at index " + i
                        + "; the file is damaged or was saved from a diverged run");
            }
        }
    }

    /** The parameter's Hugging Face tensors, from values in its own layout. */
    public static Map<String, Named> toHf(Param p, float[] values) {
        int[] shape = p.value().shape();
        int cols = shape.length == 2 ? shape[1] : 1;
        Map<String, Named> out = new LinkedHashMap<>();
        int row = 0;
        for (Param.HfPart part : p.hfParts()) {
            if (p.hfTransposed()) {
                float[] t = new float[values.length];
                transpose(values, shape[0], cols, t);
                out.put(part.name(), new Named(part.name(), new int[]{cols, shape[0]}, t));
            } else {
                float[] slice = Arrays.copyOfRange(values, row * cols, (row + part.rows()) * cols);
                int[] s = shape.length == 2 ? new int[]{part.rows(), cols} : new int[]{part.rows()};
                out.put(part.name(), new Named(part.name(), s, slice));
            }
            row += part.rows();
        }
        return out;
    }

    /** dst[c, r] = src[r, c] for a src of [rows, cols]. */
    private static void transpose(float[] src, int rows, int cols, float[] dst) {
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < cols; c++) dst[c * rows + r] = src[r * cols + c];
        }
    }
}
