import Foundation

/// When automatic advances may happen: weekly days and a time span in a time zone
/// (default Wednesday 14:00–18:00). Rollback is allowed at any time regardless.
public struct PromotionWindow: Hashable, Sendable {
    public var days: Set<Weekday>
    /// Minutes after local midnight, start inclusive, end exclusive.
    public var start: TimeOfDay
    public var end: TimeOfDay
    /// An IANA time zone identifier, e.g. `Asia/Shanghai`.
    public var timeZone: String

    public init(days: Set<Weekday>, start: TimeOfDay, end: TimeOfDay, timeZone: String) throws(GrayscaleError) {
        guard !days.isEmpty else { throw GrayscaleError("a promotion window needs at least one day") }
        guard start < end else {
            throw GrayscaleError("end must be after start (got \(start)–\(end))")
        }
        guard TimeZone(identifier: timeZone) != nil else {
            throw GrayscaleError("unknown time zone '\(timeZone)' (use an IANA name such as Asia/Shanghai or UTC)")
        }
        self.days = days
        self.start = start
        self.end = end
        self.timeZone = timeZone
    }

    /// Whether `date` falls inside the window, in local time of the window's zone
    /// (so the window follows daylight-saving changes).
    public func contains(_ date: Date) -> Bool {
        guard let zone = TimeZone(identifier: timeZone) else { return false }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        let parts = calendar.dateComponents([.weekday, .hour, .minute], from: date)
        guard let weekday = parts.weekday.flatMap(Weekday.init(rawValue:)),
              let hour = parts.hour, let minute = parts.minute
        else { return false }
        let local = TimeOfDay(minutes: hour * 60 + minute)
        return days.contains(weekday) && start <= local && local < end
    }
}

/// Days of the week, numbered as `Calendar` numbers them (Sunday = 1).
public enum Weekday: Int, Hashable, Sendable, CaseIterable, Comparable {
    case sunday = 1, monday, tuesday, wednesday, thursday, friday, saturday

    public init?(name: String) {
        guard let day = Weekday.allCases.first(where: { $0.name == name.lowercased() || $0.shortName == name.lowercased() })
        else { return nil }
        self = day
    }

    public var name: String { String(describing: self) }
    public var shortName: String { String(name.prefix(3)) }

    public static func < (lhs: Weekday, rhs: Weekday) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// A wall-clock time, `HH:MM`, as minutes after midnight (24:00 allowed as an end).
public struct TimeOfDay: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let minutes: Int

    public init(minutes: Int) { self.minutes = minutes }

    public init?(parsing text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count == 2, parts[1].count == 2,
              let hour = Int(parts[0]), let minute = Int(parts[1]),
              (0...59).contains(minute), (0...23).contains(hour) || (hour == 24 && minute == 0)
        else { return nil }
        minutes = hour * 60 + minute
    }

    public static func < (lhs: TimeOfDay, rhs: TimeOfDay) -> Bool { lhs.minutes < rhs.minutes }

    public var description: String {
        let hour = minutes / 60, minute = minutes % 60
        return (hour < 10 ? "0" : "") + "\(hour):" + (minute < 10 ? "0" : "") + "\(minute)"
    }
}

extension PromotionWindow {
    /// `wednesday 14:00–18:00 Asia/Shanghai`.
    public var summary: String {
        "\(days.sorted().map(\.name).joined(separator: ",")) \(start)–\(end) \(timeZone)"
    }
}
