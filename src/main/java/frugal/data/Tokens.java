package frugal.data;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * An immutable token stream: an int[] or a memory-mapped token file (uint16 or int32, little-endian).
 * Indexed by long so a corpus may exceed 2^31 tokens.
 */
public final class Tokens {
    private static final ValueLayout.OfShort U16 = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfInt I32 = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private final MemorySegment data;
    private final int[] array; // non-null when the tokens live on the heap
    private final int width;
    private final long size;

    private Tokens(MemorySegment data, int[] array, int width, long size) {
        this.data = data;
        this.array = array;
        this.width = width;
        this.size = size;
    }

    /** Wraps (does not copy) {@code ids}. */
    public static Tokens of(int... ids) {
        return new Tokens(null, ids, 4, ids.length);
    }

    /** Views {@code data} as little-endian tokens of {@code width} bytes (2: unsigned 16-bit, 4: 32-bit). */
    static Tokens view(MemorySegment data, int width) {
        if (width != 2 && width != 4) throw new IllegalArgumentException("token width " + width);
        return new Tokens(data, null, width, data.byteSize() / width);
    }

    public long size() {
        return size;
    }

    public int get(long i) {
        if (array != null) return array[Math.toIntExact(i)];
        return width == 2 ? Short.toUnsignedInt(data.getAtIndex(U16, i)) : data.getAtIndex(I32, i);
    }

    /** Copies {@code length} tokens starting at {@code from} into {@code dst[at..]}. */
    public void copy(long from, int[] dst, int at, int length) {
        if (from < 0 || length < 0 || from + length > size) {
            throw new IndexOutOfBoundsException("tokens [" + from + ", " + (from + length) + ") of " + size);
        }
        if (array != null) {
            System.arraycopy(array, (int) from, dst, at, length);
        } else if (width == 4) {
            MemorySegment.copy(data, I32, from * 4, dst, at, length);
        } else {
            for (int i = 0; i < length; i++) dst[at + i] = Short.toUnsignedInt(data.getAtIndex(U16, from + i));
        }
    }

    /** Tokens [from, to) as a new array. */
    public int[] toArray(long from, long to) {
        int[] out = new int[Math.toIntExact(to - from)];
        copy(from, out, 0, out.length);
        return out;
    }
}
