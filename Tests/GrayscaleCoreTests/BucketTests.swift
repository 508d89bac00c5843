import Testing
@testable import GrayscaleCore

@Suite("Bucketing")
struct BucketTests {
    @Test("MurmurHash3 x86_32 matches the published vectors")
    func publishedVectors() {
        // The vector feature-flag clients test against: ("gr1:123", seed 0) % 100 + 1 == 73.
        #expect(MurmurHash3.x86_32("gr1:123".utf8) % 100 + 1 == 73)
        // Reference values of the canonical C implementation.
        #expect(MurmurHash3.x86_32("".utf8) == 0)
        #expect(MurmurHash3.x86_32("".utf8, seed: 1) == 0x514E_28B7)
        #expect(MurmurHash3.x86_32("test".utf8) == 0xBA6B_D213)
        #expect(MurmurHash3.x86_32("Hello, world!".utf8, seed: 1234) == 0xFAF6_CDB3)
        #expect(MurmurHash3.x86_32("The quick brown fox jumps over the lazy dog".utf8) == 0x2E4F_F723)
    }

    @Test("a bucket is the hash of salt:appId modulo 10,000")
    func bucketDefinition() {
        let bucket = Bucket.of(appId: "123", salt: "gr1")
        #expect(bucket.value == Int(MurmurHash3.x86_32("gr1:123".utf8) % 10_000))
        #expect(Bucket.of(appId: "123", salt: "gr1") == bucket)
    }

    @Test("the bucket is the same however salt and appId are laid out: every length 0 to 40, Substrings, and past the stack buffer")
    func bucketLayouts() {
        // Every character of each string picked by its position: the same strings every run.
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789é-_")
        var counter = 0
        func text(_ length: Int) -> String {
            String((0..<length).map { _ in counter += 7; return alphabet[counter % alphabet.count] })
        }
        for saltLength in [0, 1, 3, 4, 5, 16, 17] {
            for appLength in 0...40 {
                let salt = text(saltLength), appId = text(appLength)
                let expected = Int(MurmurHash3.x86_32("\(salt):\(appId)".utf8) % 10_000)
                #expect(Bucket.of(appId: appId, salt: salt).value == expected)
                #expect(Bucket.of(appId: ("x" + appId).dropFirst(), salt: salt).value == expected)
            }
        }
        let long = text(600)
        #expect(Bucket.of(appId: long, salt: "s").value == Int(MurmurHash3.x86_32("s:\(long)".utf8) % 10_000))
    }

    @Test("100,000 appIds spread uniformly over the 100 percent buckets (chi-square, 99.9%)")
    func uniformity() {
        var counts = [Int](repeating: 0, count: 100)
        let users = 100_000
        for index in 0..<users {
            counts[Bucket.of(appId: "app-\(index)", salt: "3f9a0c1d2e4b5a69").percent] += 1
        }
        let expected = Double(users) / 100
        let chiSquare = counts.reduce(0.0) { $0 + (Double($1) - expected) * (Double($1) - expected) / expected }
        // 99 degrees of freedom: the 99.9% critical value is 148.23.
        #expect(chiSquare < 148.23, "chi-square \(chiSquare)")
    }

    @Test("widening the canary from a prefix keeps every user already on it")
    func monotoneGrowth() throws {
        let salt = "a1b2c3d4e5f60718"
        let users = (0..<20_000).map { "user-\($0)" }
        var previous: Set<String> = []
        for percent in ["5", "10", "25", "50"] {
            let range = try CanaryRange.parse(percent: percent)
            let cohort = Set(users.filter { range.contains(Bucket.of(appId: $0, salt: salt)) })
            #expect(previous.isSubset(of: cohort), "users dropped when widening to \(percent)%")
            #expect(cohort.count > previous.count)
            previous = cohort
        }
        #expect(abs(Double(previous.count) / Double(users.count) - 0.5) < 0.02)
    }

    @Test("two releases with different salts pick nearly independent cohorts")
    func independentCohorts() throws {
        let range = try CanaryRange.parse(percent: "10")
        let users = (0..<100_000).map { "app-\($0)" }
        let first = Set(users.filter { range.contains(Bucket.of(appId: $0, salt: "release-7-salt")) })
        let second = Set(users.filter { range.contains(Bucket.of(appId: $0, salt: "release-8-salt")) })
        let overlap = Double(first.intersection(second).count) / Double(users.count)
        // Independent 10% cohorts overlap in 1% of users; the binomial sd here is 0.03%.
        #expect(abs(overlap - 0.01) < 0.002, "overlap \(overlap)")
    }

    @Test("random salts differ and are 16 hex digits")
    func salts() {
        let salts = Set((0..<100).map { _ in Salt.random() })
        #expect(salts.count == 100)
        #expect(salts.allSatisfy { $0.count == 16 && $0.allSatisfy(\.isHexDigit) })
    }
}

@Suite("Canary range")
struct CanaryRangeTests {
    @Test("percent syntax addresses buckets in hundredths", arguments: [
        ("30", 0, 3000, "[0 - 29]", 3000),
        ("20:55", 2000, 5600, "[20 - 55]", 3600),
        ("0.5", 0, 50, "[0 - 0.49]", 50),
        ("100", 0, 10_000, "[0 - 99]", 10_000),
        ("0:0", 0, 100, "[0 - 0]", 100),
        ("0", 0, 0, "[]", 0),
    ])
    func parse(text: String, lower: Int, upper: Int, shown: String, width: Int) throws {
        let range = try CanaryRange.parse(percent: text)
        #expect(range.lower == lower)
        #expect(range.upper == upper)
        #expect(range.description == shown)
        #expect(range.widthHundredths == width)
    }

    @Test("bad percents are refused with what was wrong", arguments: ["101", "-5", "30%", "0.125", "55:20", "20:100", "a:b", "", "1.2.3"])
    func bad(text: String) {
        #expect(throws: GrayscaleError.self) { try CanaryRange.parse(percent: text) }
    }

    @Test("containment decides who stays on the canary")
    func containment() throws {
        let five = try CanaryRange.parse(percent: "5"), ten = try CanaryRange.parse(percent: "10")
        let middle = try CanaryRange.parse(percent: "20:55")
        #expect(five.isContained(in: ten))
        #expect(!ten.isContained(in: five))
        #expect(!five.isContained(in: middle))
        #expect(CanaryRange.empty.isContained(in: five))
        #expect(middle.contains(Bucket(2000)) && middle.contains(Bucket(5599)))
        #expect(!middle.contains(Bucket(1999)) && !middle.contains(Bucket(5600)))
    }

    @Test("hundredths format and parse")
    func hundredths() {
        #expect(formatHundredths(3600) == "36")
        #expect(formatHundredths(50) == "0.5")
        #expect(formatHundredths(1225) == "12.25")
        #expect(formatHundredths(5) == "0.05")
        #expect(parseHundredths("12.25") == 1225)
        #expect(parseHundredths("0.5") == 50)
        #expect(parseHundredths(".5") == nil)
        #expect(parseHundredths("5.") == nil)
    }
}
