/// The random salt a release's cohort is drawn with: 16 hex digits.
public enum Salt {
    public static func random<Generator: RandomNumberGenerator>(using generator: inout Generator) -> String {
        let value = UInt64.random(in: .min ... .max, using: &generator)
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    public static func random() -> String {
        var generator = SystemRandomNumberGenerator()
        return random(using: &generator)
    }
}
