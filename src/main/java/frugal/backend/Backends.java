package frugal.backend;

import frugal.FrugalException;
import frugal.backend.cpu.CpuBackend;
import frugal.backend.cuda.CudaBackend;

/** Chooses a backend by name: cpu, cuda, or auto (cuda when a GPU and its libraries are found). */
public final class Backends {
    private Backends() {
    }

    public static Backend create(String device) {
        return switch (device) {
            case "cpu" -> new CpuBackend();
            case "cuda" -> {
                if (!CudaBackend.isAvailable()) {
                    throw new FrugalException("--device cuda: " + CudaBackend.unavailableReason());
                }
                yield new CudaBackend();
            }
            case "auto" -> CudaBackend.isAvailable() ? new CudaBackend() : new CpuBackend();
            default -> throw new FrugalException("unknown device \"" + device + "\" (cpu, cuda or auto)");
        };
    }
}
