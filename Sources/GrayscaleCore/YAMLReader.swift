import Yams

/// Reads a YAML document field by field and reports every mistake as
/// `file:line: field: reason`. Shared by policy, scenario and config files.
public struct YAMLReader: Sendable {
    public let file: String

    public init(file: String) { self.file = file }

    /// Parses `text`; a syntax error names the line libyaml stopped at.
    public func root(of text: String) throws(GrayscaleError) -> Node {
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw syntaxError(error)
        } catch {
            throw GrayscaleError("\(file):1: yaml: \(error)")
        }
        guard let node, !(node.scalar.map { $0.string.isEmpty && $0.style == .plain } ?? false) else {
            throw GrayscaleError("\(file):1: document: the file is empty")
        }
        return node
    }

    public func error(_ node: Node?, _ field: String, _ reason: String) -> GrayscaleError {
        GrayscaleError("\(file):\(node?.mark?.line ?? 1): \(field): \(reason)")
    }

    /// The fields of a mapping, rejecting unknown and repeated keys.
    public func fields(_ node: Node, _ path: String, known: [String]) throws(GrayscaleError) -> Fields {
        guard let mapping = node.mapping else {
            throw error(node, path.isEmpty ? "document" : path, "expected a mapping of fields (\(known.joined(separator: ", ")))")
        }
        var values: [String: Node] = [:]
        for (key, value) in mapping {
            guard let name = key.scalar?.string else { throw error(key, path, "field names must be plain strings") }
            let fieldPath = path.isEmpty ? name : "\(path).\(name)"
            guard known.contains(name) else {
                throw error(key, fieldPath, "unknown field (known fields: \(known.joined(separator: ", ")))")
            }
            guard values[name] == nil else { throw error(key, fieldPath, "field appears twice") }
            values[name] = value
        }
        return Fields(path: path, values: values)
    }

    /// Refuses fields that once existed and were removed, saying why, rather than as unknown.
    public func refuseRemoved(_ node: Node, _ path: String, _ removed: [String: String]) throws(GrayscaleError) {
        guard let mapping = node.mapping else { return }
        for (key, _) in mapping {
            guard let name = key.scalar?.string, let why = removed[name] else { continue }
            throw error(key, path.isEmpty ? name : "\(path).\(name)", "no longer supported: \(why)")
        }
    }

    public struct Fields {
        public let path: String
        public let values: [String: Node]

        public subscript(_ name: String) -> Node? {
            guard let node = values[name], !node.isNull else { return nil }
            return node
        }

        public func path(_ name: String) -> String { path.isEmpty ? name : "\(path).\(name)" }
    }

    // MARK: - Scalars

    public func string(_ node: Node, _ field: String) throws(GrayscaleError) -> String {
        guard let scalar = node.scalar else { throw error(node, field, "expected a string") }
        return scalar.string
    }

    public func int(_ node: Node, _ field: String, in range: ClosedRange<Int>) throws(GrayscaleError) -> Int {
        guard node.scalar != nil, let value = node.int else {
            throw error(node, field, "expected a whole number (got \(describe(node)))")
        }
        guard range.contains(value) else {
            throw error(node, field, "must be between \(range.lowerBound) and \(range.upperBound) (got \(value))")
        }
        return value
    }

    public func double(_ node: Node, _ field: String, in range: ClosedRange<Double>, exclusiveLower: Bool = false) throws(GrayscaleError) -> Double {
        guard node.scalar != nil, let value = node.float, value.isFinite else {
            throw error(node, field, "expected a number (got \(describe(node)))")
        }
        guard range.contains(value), !(exclusiveLower && value == range.lowerBound) else {
            let lower = exclusiveLower ? "greater than \(range.lowerBound)" : "at least \(range.lowerBound)"
            throw error(node, field, "must be \(lower) and at most \(range.upperBound) (got \(describe(node)))")
        }
        return value
    }

    public func bool(_ node: Node, _ field: String) throws(GrayscaleError) -> Bool {
        guard node.scalar != nil, let value = node.bool else {
            throw error(node, field, "expected true or false (got \(describe(node)))")
        }
        return value
    }

    /// A percent with at most two decimals, in hundredths: `30` → 3000, `0.5` → 50.
    public func percent(_ node: Node, _ field: String) throws(GrayscaleError) -> Int {
        guard let text = node.scalar?.string, let value = parseHundredths(text), value <= 10_000 else {
            throw error(node, field, "expected a percent from 0 to 100 with at most two decimals (got \(describe(node)))")
        }
        return value
    }

    /// A duration such as `90s`, `10m`, `1h30m`, in seconds.
    public func duration(_ node: Node, _ field: String) throws(GrayscaleError) -> Int {
        guard let text = node.scalar?.string, let seconds = parseDuration(text) else {
            throw error(node, field, "expected a duration such as 30s, 10m or 1h30m (got \(describe(node)))")
        }
        return seconds
    }

    public func list(_ node: Node, _ field: String) throws(GrayscaleError) -> [Node] {
        guard let sequence = node.sequence else { throw error(node, field, "expected a list (got \(describe(node)))") }
        return Array(sequence)
    }

    public func strings(_ node: Node, _ field: String) throws(GrayscaleError) -> [String] {
        var result: [String] = []
        for (index, item) in try list(node, field).enumerated() {
            result.append(try string(item, "\(field)[\(index)]"))
        }
        return result
    }

    private func describe(_ node: Node) -> String {
        if let scalar = node.scalar { return "'\(scalar.string)'" }
        return node.mapping != nil ? "a mapping" : "a list"
    }

    private func syntaxError(_ error: YamlError) -> GrayscaleError {
        switch error {
        case let .scanner(context, problem, mark, _), let .parser(context, problem, mark, _),
             let .composer(context, problem, mark, _):
            let detail = context.map { "\($0.text) " } ?? ""
            return GrayscaleError("\(file):\(mark.line): yaml: \(detail)\(problem)")
        case let .reader(problem, _, _, _):
            return GrayscaleError("\(file):1: yaml: \(problem)")
        default:
            return GrayscaleError("\(file):1: yaml: \(error)")
        }
    }
}

extension Node {
    var isNull: Bool { scalar.map { $0.style == .plain && ["", "~", "null", "Null", "NULL"].contains($0.string) } ?? false }
}

/// Parses `90s`, `10m`, `1h30m`, `2h`, `1d` into seconds; nil when malformed or zero-free garbage.
public func parseDuration(_ text: String) -> Int? {
    var total = 0, digits = "", sawUnit = false
    for character in text {
        if character.isASCIIDigit {
            digits.append(character)
            continue
        }
        let unit: Int
        switch character {
        case "s": unit = 1
        case "m": unit = 60
        case "h": unit = 3600
        case "d": unit = 86_400
        default: return nil
        }
        guard let value = Int(digits), digits.count <= 9 else { return nil }
        total += value * unit
        digits = ""
        sawUnit = true
    }
    return sawUnit && digits.isEmpty ? total : nil
}

/// Formats seconds as the shortest duration text `parseDuration` reads back: 5400 → `1h30m`.
public func formatDuration(_ seconds: Int) -> String {
    if seconds == 0 { return "0s" }
    var rest = seconds, text = ""
    for (unit, suffix) in [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")] where rest >= unit {
        text += "\(rest / unit)\(suffix)"
        rest %= unit
    }
    return text
}
