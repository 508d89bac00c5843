/// One of the 10,000 buckets users are spread over. A percent bucket is a hundred
/// of them: percent bucket 20 is buckets 2000..<2100.
public struct Bucket: Hashable, Comparable, Sendable, CustomStringConvertible {
    public static let count = 10_000
    public static let perPercent = 100

    public let value: Int

    @inlinable
    public init(_ value: Int) {
        precondition((0..<Bucket.count).contains(value), "bucket out of range: \(value)")
        self.value = value
    }

    /// The bucket of a user for a release: MurmurHash3_x86_32("<salt>:<appId>", seed 0) mod 10,000.
    @inlinable
    public static func of(appId: some StringProtocol, salt: some StringProtocol) -> Bucket {
        var hash = MurmurHash3(seed: 0)
        let total = salt.utf8.count + 1 + appId.utf8.count
        if total <= 512 {
            // "salt:appId" laid out in one stack buffer and hashed four bytes at a time (the same
            // hash as appending the parts one after the other, without the byte-by-byte seams).
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: total) { buffer in
                var end = buffer.initialize(fromContentsOf: salt.utf8)
                buffer[end] = UInt8(ascii: ":")
                end += 1
                end = UnsafeMutableBufferPointer(rebasing: buffer[end...]).initialize(fromContentsOf: appId.utf8) + end
                hash.append(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: buffer[..<end])))
            }
        } else {
            hash.append(salt.utf8)
            hash.append(CollectionOfOne(UInt8(ascii: ":")))
            hash.append(appId.utf8)
        }
        return Bucket(Int(hash.value % UInt32(Bucket.count)))
    }

    /// The percent bucket (0–99) this bucket lies in.
    public var percent: Int { value / Bucket.perPercent }

    public static func < (lhs: Bucket, rhs: Bucket) -> Bool { lhs.value < rhs.value }

    public var description: String { String(value) }
}
