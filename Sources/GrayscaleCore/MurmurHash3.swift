/// MurmurHash3, x86 32-bit variant (Austin Appleby, public domain), fed incrementally
/// so that `"<salt>:<appId>"` hashes without building the concatenated string.
///
/// The cohort of a release must be the same in every process and on every machine,
/// so bucketing never uses Swift's `Hasher` (seeded per process).
public struct MurmurHash3: Sendable {
    @usableFromInline var h1: UInt32
    @usableFromInline var length: UInt32 = 0
    @usableFromInline var tail: UInt32 = 0
    @usableFromInline var tailCount: UInt32 = 0

    @inlinable
    public init(seed: UInt32 = 0) { h1 = seed }

    /// The hash of `bytes` in one call.
    @inlinable
    public static func x86_32<Bytes: Sequence>(_ bytes: Bytes, seed: UInt32 = 0) -> UInt32
    where Bytes.Element == UInt8 {
        var hash = MurmurHash3(seed: seed)
        hash.append(bytes)
        return hash.value
    }

    @inlinable
    public mutating func append<Bytes: Sequence>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        let done: Void? = bytes.withContiguousStorageIfAvailable { append(UnsafeRawBufferPointer($0)) }
        guard done == nil else { return }
        for byte in bytes { appendByte(byte) }
    }

    /// Whole 4-byte blocks straight from memory; only the ends go byte by byte.
    @inlinable
    public mutating func append(_ buffer: UnsafeRawBufferPointer) {
        var offset = 0
        while tailCount != 0, offset < buffer.count {
            appendByte(buffer[offset])
            offset += 1
        }
        while offset + 4 <= buffer.count {
            mixBlock(UInt32(littleEndian: buffer.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
            length &+= 4
            offset += 4
        }
        while offset < buffer.count {
            appendByte(buffer[offset])
            offset += 1
        }
    }

    @inlinable
    mutating func appendByte(_ byte: UInt8) {
        tail |= UInt32(byte) << (8 * tailCount)
        tailCount += 1
        length &+= 1
        if tailCount == 4 {
            mixBlock(tail)
            tail = 0
            tailCount = 0
        }
    }

    @inlinable
    mutating func mixBlock(_ block: UInt32) {
        h1 ^= Self.scramble(block)
        h1 = (h1 << 13) | (h1 >> 19)
        h1 = h1 &* 5 &+ 0xe654_6b64
    }

    /// The hash of everything appended so far.
    @inlinable
    public var value: UInt32 {
        var h = h1
        if tailCount > 0 { h ^= Self.scramble(tail) }
        h ^= length
        h ^= h >> 16
        h = h &* 0x85eb_ca6b
        h ^= h >> 13
        h = h &* 0xc2b2_ae35
        h ^= h >> 16
        return h
    }

    @inlinable
    static func scramble(_ k: UInt32) -> UInt32 {
        var k1 = k &* 0xcc9e_2d51
        k1 = (k1 << 15) | (k1 >> 17)
        return k1 &* 0x1b87_3593
    }
}
