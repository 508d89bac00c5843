/// The buckets whose users get the canary: `lower ..< upper`, in buckets of 10,000.
///
/// Percent syntax addresses buckets in hundredths: `30` is percent buckets 0–29
/// (buckets 0..<3000), `20:55` is percent buckets 20 through 55 inclusive
/// (buckets 2000..<5600), `0.5` is buckets 0..<50.
public struct CanaryRange: Hashable, Sendable, Codable, CustomStringConvertible {
    public let lower: Int
    public let upper: Int

    public static let empty = CanaryRange(uncheckedLower: 0, upper: 0)
    public static let everyone = CanaryRange(uncheckedLower: 0, upper: Bucket.count)

    public init(lower: Int, upper: Int) throws(GrayscaleError) {
        guard 0 <= lower, lower <= upper, upper <= Bucket.count else {
            throw GrayscaleError("canary range: buckets must satisfy 0 <= lower <= upper <= \(Bucket.count) (got \(lower)..<\(upper))")
        }
        self.lower = lower
        self.upper = upper
    }

    init(uncheckedLower lower: Int, upper: Int) {
        self.lower = lower
        self.upper = upper
    }

    /// The first `hundredths` hundredths of a percent of buckets: `prefix(3000)` is 30%.
    public static func prefix(hundredths: Int) throws(GrayscaleError) -> CanaryRange {
        try CanaryRange(lower: 0, upper: hundredths)
    }

    /// Parses the bot's and CLI's percent syntax: `30`, `0.5`, `20:55`.
    public static func parse(percent text: some StringProtocol) throws(GrayscaleError) -> CanaryRange {
        let trimmed = text.trimmingWhitespace()
        if let colon = trimmed.firstIndex(of: ":") {
            let lowText = trimmed[..<colon], highText = trimmed[trimmed.index(after: colon)...]
            guard let low = Int(lowText), let high = Int(highText),
                  lowText.allSatisfy(\.isASCIIDigit), highText.allSatisfy(\.isASCIIDigit)
            else {
                throw GrayscaleError("percent range '\(trimmed)': expected whole percent buckets LOW:HIGH, e.g. 20:55")
            }
            guard low <= high, high < 100 else {
                throw GrayscaleError("percent range '\(trimmed)': buckets run 0 to 99 and LOW must not exceed HIGH")
            }
            return CanaryRange(uncheckedLower: low * Bucket.perPercent, upper: (high + 1) * Bucket.perPercent)
        }
        guard let hundredths = parseHundredths(trimmed), hundredths <= Bucket.count else {
            throw GrayscaleError("percent '\(trimmed)': expected a percent from 0 to 100 with at most two decimals (30, 0.5) or a range LOW:HIGH (20:55)")
        }
        return CanaryRange(uncheckedLower: 0, upper: hundredths)
    }

    @inlinable
    public func contains(_ bucket: Bucket) -> Bool { lower <= bucket.value && bucket.value < upper }

    public var isEmpty: Bool { lower == upper }

    /// The share of users in the range, in hundredths of a percent (3600 = 36%).
    public var widthHundredths: Int { upper - lower }

    /// True when every bucket of `self` is also in `other`: widening a prefix keeps
    /// every user already on the canary there.
    public func isContained(in other: CanaryRange) -> Bool {
        isEmpty || (other.lower <= lower && upper <= other.upper)
    }

    /// The design document's notation: `[20 - 55]` for percent buckets 20 through 55.
    public var description: String {
        if isEmpty { return "[]" }
        let last = upper % Bucket.perPercent == 0 ? (upper - Bucket.perPercent) : (upper - 1)
        return "[\(formatHundredths(lower)) - \(formatHundredths(last))]"
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> Substring {
        let scalars = self[...]
        guard let start = scalars.firstIndex(where: { !$0.isWhitespace }),
              let end = scalars.lastIndex(where: { !$0.isWhitespace })
        else { return Substring() }
        return Substring(scalars[start...end])
    }
}
