/// Formats a count of hundredths of a percent (basis points) as a percent number:
/// 3600 → "36", 50 → "0.5", 1225 → "12.25".
public func formatHundredths(_ value: Int) -> String {
    let whole = value / 100
    let fraction = abs(value % 100)
    if fraction == 0 { return String(whole) }
    let sign = value < 0 && whole == 0 ? "-" : ""
    if fraction % 10 == 0 { return "\(sign)\(whole).\(fraction / 10)" }
    return "\(sign)\(whole).\(fraction < 10 ? "0" : "")\(fraction)"
}

/// Parses a percent number with at most two decimals ("36", "0.5", "12.25") into
/// hundredths of a percent. Returns nil for anything else.
public func parseHundredths(_ text: some StringProtocol) -> Int? {
    let parts = text.split(separator: ".", omittingEmptySubsequences: false)
    guard parts.count <= 2, let wholeText = parts.first, !wholeText.isEmpty,
          wholeText.allSatisfy(\.isASCIIDigit), wholeText.count <= 6,
          let whole = Int(wholeText)
    else { return nil }
    var fraction = 0
    if parts.count == 2 {
        let fractionText = parts[1]
        guard (1...2).contains(fractionText.count), fractionText.allSatisfy(\.isASCIIDigit),
              let digits = Int(fractionText)
        else { return nil }
        fraction = fractionText.count == 1 ? digits * 10 : digits
    }
    return whole * 100 + fraction
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
