package frugal.train;

import frugal.FrugalException;
import frugal.backend.Backend;
import frugal.backend.cpu.CpuBackend;
import frugal.model.Init;
import frugal.model.ModelConfig;
import frugal.model.Transformer;
import frugal.nn.Param;
import frugal.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** Checkpoints round-trip exactly, and a save that fails part-way leaves the previous file as it was. */
class CheckpointTest {
    private static final ModelConfig CONFIG = ModelConfig.gpt2(64, 16, 32, 2, 2);

    @TempDir
    Path dir;

    @Test
    void roundTripsWeightsMomentsStepAndState() {
        try (Backend cpu = new CpuBackend()) {
            Transformer model = model(cpu, 1);
            AdamW optimizer = new AdamW(cpu, model.params(), 0.9f, 0.95f, 1e-8f, 0.1f);
            fill(cpu, optimizer.firstMoments().get(3), 0.25f);
            optimizer.setStepCount(7);
            Path file = dir.resolve(Checkpoint.FILE);
            Checkpoint.save(file, model, optimizer, cpu, Map.of("data", "seed=1,epoch=0,index=2,windows=9"));

            Checkpoint.Loaded loaded = Checkpoint.read(file);
            assertEquals(CONFIG, loaded.config());
            assertEquals(7, loaded.step());
            assertEquals(Map.of("data", "seed=1,epoch=0,index=2,windows=9"), loaded.state());
            Transformer restored = model(cpu, 2);
            AdamW restoredOptimizer = new AdamW(cpu, restored.params(), 0.9f, 0.95f, 1e-8f, 0.1f);
            Checkpoint.restore(loaded, restored, restoredOptimizer, cpu);
            assertEquals(7, restoredOptimizer.stepCount());
            for (int i = 0; i < model.params().all().size(); i++) {
                assertArrayEquals(model.params().all().get(i).value().toFloatArray(), restored.params().all().get(i).value().toFloatArray());
            }
            assertArrayEquals(optimizer.firstMoments().get(3).toFloatArray(), restoredOptimizer.firstMoments().get(3).toFloatArray());
        }
    }

    @Test
    void saveAbortedByANonFiniteValueLeavesThePreviousCheckpoint() throws IOException {
        try (Backend cpu = new CpuBackend()) {
            Transformer model = model(cpu, 1);
            AdamW optimizer = new AdamW(cpu, model.params(), 0.9f, 0.95f, 1e-8f, 0.1f);
            optimizer.setStepCount(3);
            Path file = dir.resolve(Checkpoint.FILE);
            Checkpoint.save(file, model, optimizer, cpu, Map.of());
            byte[] good = Files.readAllBytes(file);

            // The last tensor written is the second moment of the last parameter: everything before it is already in
            // the temporary file when the NaN is found.
            List<Param> params = model.params().all();
            fill(cpu, optimizer.secondMoments().get(params.size() - 1), Float.NaN);
            optimizer.setStepCount(4);
            FrugalException e = assertThrows(FrugalException.class, () -> Checkpoint.save(file, model, optimizer, cpu, Map.of()));
            String name = "optimizer.v." + params.getLast().name();
            assertEquals("step 4: " + name + " holds NaN at index 0; the checkpoint was not saved and " + file + " is left as it was",
                    e.getMessage());

            assertArrayEquals(good, Files.readAllBytes(file));
            try (Stream<Path> files = Files.list(dir)) {
                assertEquals(List.of(file), files.toList(), "temporary files left behind");
            }
            assertEquals(3, Checkpoint.read(file).step());
        }
    }

    private static Transformer model(Backend cpu, long seed) {
        Transformer model = new Transformer(CONFIG, cpu);
        Init.initialize(model, cpu, seed);
        return model;
    }

    private static void fill(Backend cpu, Tensor t, float value) {
        float[] values = new float[(int) t.size()];
        Arrays.fill(values, value);
        cpu.upload(t, MemorySegment.ofArray(values));
    }
}
