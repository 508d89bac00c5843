import Foundation

/// A release announced in the release channel ahead of its rollout: the design
/// document's release process announces each release 24 hours before it starts. Under a
/// policy with `announce`, the controller starts a release (gives it its first users) only
/// in a promotion window that opened at least that long after the announcement.
public struct Announcement: Codable, Hashable, Sendable {
    public var service: String
    public var release: Int
    public var at: Date
    public var actor: String
    public var notes: String

    public init(service: String, release: Int, at: Date, actor: String, notes: String) {
        self.service = service
        self.release = release
        self.at = at
        self.actor = actor
        self.notes = notes
    }

    /// The message for the release channel.
    public func message(label: String, window: PromotionWindow, lead: Int?) -> String {
        var text = "\(service): release \(release) (\(label)) announced by \(actor)"
        if let lead, let opens = window.nextOpening(atOrAfter: at.addingTimeInterval(Double(lead))) {
            text += "; it starts no earlier than the promotion window opening \(PromotionWindow.format(opens, in: window.timeZone))"
        }
        let notes = notes.trimmingCharacters(in: .whitespacesAndNewlines)
        return notes.isEmpty ? text : text + "\nNotes: " + notes
    }
}

extension PromotionWindow {
    private var calendar: Calendar? {
        guard let zone = TimeZone(identifier: timeZone) else { return nil }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        return calendar
    }

    /// When the window occurrence that contains `date` opened; nil outside the window.
    public func opening(of date: Date) -> Date? {
        guard contains(date), let calendar else { return nil }
        return calendar.date(bySettingHour: start.minutes / 60, minute: start.minutes % 60, second: 0, of: date)
    }

    /// The first opening of the window at or after `date` (nil only for a window that never opens).
    public func nextOpening(atOrAfter date: Date) -> Date? {
        guard let calendar else { return nil }
        for offset in 0...7 {
            guard let day = calendar.date(byAdding: .day, value: offset, to: date),
                  let opening = calendar.date(bySettingHour: start.minutes / 60, minute: start.minutes % 60, second: 0, of: day),
                  let weekday = Weekday(rawValue: calendar.component(.weekday, from: opening)), days.contains(weekday),
                  opening >= date
            else { continue }
            return opening
        }
        return nil
    }

    /// A time as people in the window's zone read it, e.g. "Wed 2026-12-09 14:00 Asia/Shanghai".
    public static func format(_ date: Date, in timeZone: String) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: timeZone) ?? .gmt
        let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .weekday], from: date)
        let day = parts.weekday.flatMap(Weekday.init(rawValue:))?.shortName.capitalized ?? ""
        func two(_ value: Int?) -> String { String(format: "%02d", value ?? 0) }
        return "\(day) \(parts.year ?? 0)-\(two(parts.month))-\(two(parts.day)) \(two(parts.hour)):\(two(parts.minute)) \(timeZone)"
    }
}
