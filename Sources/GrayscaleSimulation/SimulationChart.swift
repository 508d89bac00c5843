import Foundation

/// The timeline of a run as an SVG a person reads at a glance: the canary's share
/// of users, each version's error rate, the verdicts, and the rollback or promotion.
public enum SimulationChart {
    public static func svg(_ report: SimulationReport) -> String {
        var run = report.grayscale
        // Show the rollout, not hours of quiet after it: up to a while after the last event.
        if let last = run.timeline.last(where: { $0.event == "rollback" || $0.event == "promote" }) {
            let until = min(run.timeline.last?.at ?? 0, last.at + max(600, last.at / 2))
            run.timeline = run.timeline.filter { $0.at <= until }
        }
        let width = 960.0, height = 420.0, left = 60.0, right = 20.0, top = 50.0, bottom = 60.0
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        let end = Double(max(1, (run.timeline.last?.at ?? 0)))
        let maxRate = max(0.01, run.timeline.map { max($0.canaryErrorRate, $0.stableErrorRate) }.max() ?? 0)
        func x(_ at: Int) -> Double { left + Double(at) / end * plotWidth }
        func yPercent(_ value: Double) -> Double { top + plotHeight * (1 - value / 100) }
        func yRate(_ value: Double) -> Double { top + plotHeight * (1 - value / maxRate) }
        func path(_ points: [(Double, Double)]) -> String {
            points.enumerated().map { String(format: "%@%.1f,%.1f", $0.offset == 0 ? "M" : "L", $0.element.0, $0.element.1) }.joined(separator: " ")
        }
        func escape(_ text: String) -> String {
            text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
        }
        var parts: [String] = []
        parts.append(##"<svg xmlns="http://www.w3.org/2000/svg" width="\##(Int(width))" height="\##(Int(height))" font-family="sans-serif" font-size="12">"##)
        parts.append(##"<rect width="100%" height="100%" fill="white"/>"##)
        parts.append(##"<text x="\##(left)" y="22" font-size="15" font-weight="bold">\##(escape(report.scenario)): \##(escape(run.outcome)), \##(run.usersHurt) users hurt (no grayscale: \##(report.noGrayscale.usersHurt))</text>"##)
        parts.append(##"<rect x="\##(left)" y="\##(top)" width="\##(plotWidth)" height="\##(plotHeight)" fill="none" stroke="#999"/>"##)
        for percent in stride(from: 0.0, through: 100, by: 25) {
            parts.append(String(format: ##"<text x="%.0f" y="%.1f" text-anchor="end" fill="#1f6feb">%.0f%%</text>"##, left - 6, yPercent(percent) + 4, percent))
        }
        parts.append(String(format: ##"<text x="%.0f" y="%.0f" text-anchor="end" fill="#cf222e">err %.2f%%</text>"##, width - right, top - 6, maxRate * 100))
        let minutes = Int(end / 60)
        for minute in stride(from: 0, through: minutes, by: max(1, minutes / 8)) {
            parts.append(String(format: ##"<text x="%.1f" y="%.0f" text-anchor="middle">%dm</text>"##, x(minute * 60), height - bottom + 18, minute))
        }
        parts.append(##"<path d="\##(path(run.timeline.map { (x($0.at), yPercent($0.canaryPercent)) }))" fill="none" stroke="#1f6feb" stroke-width="2"/>"##)
        parts.append(##"<path d="\##(path(run.timeline.map { (x($0.at), yRate($0.stableErrorRate)) }))" fill="none" stroke="#2da44e" stroke-width="1.5"/>"##)
        parts.append(##"<path d="\##(path(run.timeline.map { (x($0.at), yRate($0.canaryErrorRate)) }))" fill="none" stroke="#cf222e" stroke-width="1.5"/>"##)
        var labels = 0
        for point in run.timeline {
            if let verdict = point.verdict {
                let color = verdict == "fail" ? "#cf222e" : verdict == "pass" ? "#2da44e" : "#bbbbbb"
                parts.append(String(format: ##"<rect x="%.1f" y="%.0f" width="3" height="8" fill="%@"/>"##, x(point.at) - 1.5, height - bottom + 24, color))
            }
            if let event = point.event, event == "rollback" || event == "promote" || event.hasPrefix("published") {
                let color = event == "rollback" ? "#cf222e" : event == "promote" ? "#2da44e" : "#6e7781"
                parts.append(String(format: ##"<line x1="%.1f" x2="%.1f" y1="%.0f" y2="%.0f" stroke="%@" stroke-dasharray="4 3"/>"##, x(point.at), x(point.at), top, height - bottom, color))
                parts.append(String(format: ##"<text x="%.1f" y="%.0f" fill="%@">%@</text>"##, x(point.at) + 4, top + 14 + Double(labels % 3) * 14, color, escape(event)))
                labels += 1
            }
        }
        let legend = [("#1f6feb", "canary % of users"), ("#cf222e", "canary error rate"), ("#2da44e", "stable error rate"), ("#bbbbbb", "verdicts (pass / fail / inconclusive)")]
        for (index, item) in legend.enumerated() {
            let lx = left + Double(index) * 210
            parts.append(##"<rect x="\##(lx)" y="\##(height - 14)" width="12" height="4" fill="\##(item.0)"/><text x="\##(lx + 16)" y="\##(height - 9)">\##(item.1)</text>"##)
        }
        parts.append("</svg>")
        return parts.joined(separator: "\n")
    }
}
