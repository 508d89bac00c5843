import Foundation
import Testing
@testable import GrayscaleCore

@Suite("Promotion window")
struct PromotionWindowTests {
    func date(_ iso: String) -> Date { ISO8601DateFormatter().date(from: iso)! }

    @Test("default window: Wednesday 14:00–18:00 Shanghai time")
    func defaultWindow() {
        let window = RolloutPolicy.standard.window
        #expect(window.contains(date("2026-11-25T06:00:00Z")))   // Wed 14:00 +08
        #expect(window.contains(date("2026-11-25T09:59:00Z")))   // Wed 17:59 +08
        #expect(!window.contains(date("2026-11-25T10:00:00Z")))  // Wed 18:00 +08, end is exclusive
        #expect(!window.contains(date("2026-11-25T05:59:00Z")))  // Wed 13:59 +08
        #expect(!window.contains(date("2026-11-26T06:30:00Z")))  // Thu 14:30 +08
        #expect(!window.contains(date("2026-11-24T22:00:00Z")))  // Wed 06:00 +08, Tue in UTC
    }

    @Test("the window follows daylight saving in its own time zone")
    func daylightSaving() throws {
        let window = try PromotionWindow(days: [.wednesday], start: TimeOfDay(minutes: 14 * 60),
                                         end: TimeOfDay(minutes: 18 * 60), timeZone: "America/New_York")
        // Summer (EDT, UTC-4): 14:00 local is 18:00Z.
        #expect(window.contains(date("2026-07-01T18:00:00Z")))
        #expect(!window.contains(date("2026-07-01T22:00:00Z")))
        // Winter (EST, UTC-5): 14:00 local is 19:00Z, so 18:30Z is still 13:30 local.
        #expect(!window.contains(date("2026-12-02T18:30:00Z")))
        #expect(window.contains(date("2026-12-02T19:00:00Z")))
        #expect(window.contains(date("2026-12-02T22:59:00Z")))
    }

    @Test("times and days parse strictly")
    func parsing() {
        #expect(TimeOfDay(parsing: "14:00")?.minutes == 840)
        #expect(TimeOfDay(parsing: "24:00")?.minutes == 1440)
        #expect(TimeOfDay(parsing: "24:01") == nil)
        #expect(TimeOfDay(parsing: "9:00") == nil)
        #expect(Weekday(name: "Wed") == .wednesday)
        #expect(Weekday(name: "wendesday") == nil)
    }
}
