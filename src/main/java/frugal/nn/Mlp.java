package frugal.nn;

import frugal.tensor.Tensor;

/** The feed-forward half of a block: GELU (GPT-2) or SwiGLU (Llama). */
public interface Mlp {
    /** y[rows, C] = mlp(x[rows, C]). */
    void forward(Context ctx, Tensor y, Tensor x, int rows);

    /** dx = gradient of the input (overwrites); accumulates parameter gradients. */
    void backward(Context ctx, Tensor dx, Tensor dy, int rows);
}
