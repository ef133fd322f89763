package frugal.train;

import com.fasterxml.jackson.databind.node.ObjectNode;
import frugal.stash.Stash;
import frugal.stash.StashKind;
import frugal.stash.StashLedger;

import java.util.Map;

/** The stash ledger of one step as metrics fields (all prefixed {@code stash_}, {@code traffic_}, {@code bit_ops}). */
public final class StashMetrics {
    private StashMetrics() {
    }

    /** Adds the ledger of the step just run; {@code tokensPerPass} = batch·seq of one forward, {@code passes} per step. */
    public static void put(ObjectNode record, Stash stash, long tokensPerPass, int passes) {
        StashLedger l = stash.ledger();
        record.put("stash_stage", stash.policy().stage());
        record.put("stash_peak_bytes", l.peakHeld());
        record.put("stash_bytes_per_token", (double) l.peakHeld() / tokensPerPass);
        record.put("stash_bf16_bytes_per_token", (double) l.peakHeldBf16() / tokensPerPass);
        record.put("stash_written_bytes", l.bytesWritten());
        record.put("stash_read_bytes", l.bytesRead());
        ObjectNode kinds = record.putObject("stash_kinds");
        for (Map.Entry<StashKind, StashLedger.KindBytes> e : l.kinds().entrySet()) {
            kinds.putObject(e.getKey().key()).put("written", e.getValue().written).put("read", e.getValue().read)
                    .put("bf16_written", e.getValue().bf16Written);
        }
        long tokens = tokensPerPass * passes;
        record.put("traffic_bytes_per_token", (double) l.trafficBytes() / tokens);
        record.put("traffic_16bit_bytes_per_token", (double) l.trafficBytes16() / tokens);
        record.put("bit_ops_per_token", l.bitWeightedOps() / tokens);
        record.put("bit_ops_16bit_per_token", l.bitWeightedOps16() / tokens);
    }
}
