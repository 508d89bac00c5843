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
        for byte in bytes {
            tail |= UInt32(byte) << (8 * tailCount)
            tailCount += 1
            length &+= 1
            if tailCount == 4 {
                h1 ^= Self.scramble(tail)
                h1 = (h1 << 13) | (h1 >> 19)
                h1 = h1 &* 5 &+ 0xe654_6b64
                tail = 0
                tailCount = 0
            }
        }
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
