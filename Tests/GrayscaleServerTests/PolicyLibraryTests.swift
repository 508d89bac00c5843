import Foundation
import GrayscaleCore
import GrayscaleServer
import Testing

@Suite("Policy library")
struct PolicyLibraryTests {
    @Test("a policy file deleted or broken is never kept silently: its service gets a problem and keeps its last good policy for judging")
    func reloadExactly() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("grayscale-policies-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let engine = folder + "/engine.yaml"
        try "service: engine\nsteps: [2, 100]\n".write(toFile: engine, atomically: true, encoding: .utf8)
        var library = PolicyLibrary(folder: folder)
        try library.reload()
        #expect(library.policy(for: "engine").steps == [200, 10_000])
        #expect(library.problem(for: "engine") == nil)

        try "service: engine\nsteps: [2, 100\n".write(toFile: engine, atomically: true, encoding: .utf8)
        try library.reload()
        #expect(library.problem(for: "engine")?.hasPrefix("\(engine):") == true, "\(library.problem(for: "engine") ?? "none")")
        #expect(library.policy(for: "engine").steps == [200, 10_000], "the last good policy, for judging")
        #expect(library.problem(for: "registry") == nil, "other services are not held")

        try "service: engine\nsteps: [3, 100]\n".write(toFile: engine, atomically: true, encoding: .utf8)
        try library.reload()
        #expect(library.problem(for: "engine") == nil)
        #expect(library.policy(for: "engine").steps == [300, 10_000])

        try FileManager.default.removeItem(atPath: engine)
        try library.reload()
        #expect(library.problem(for: "engine") == "\(engine) was deleted")

        // A new process that finds the file broken names its service by the file name.
        try "service: engine\nsteps: [2, 100\n".write(toFile: engine, atomically: true, encoding: .utf8)
        var fresh = PolicyLibrary(folder: folder)
        try fresh.reload()
        #expect(fresh.problem(for: "engine")?.hasPrefix("\(engine):") == true)
        // A broken default.yaml holds every service that follows it.
        try "steps: [oops\n".write(toFile: folder + "/default.yaml", atomically: true, encoding: .utf8)
        try fresh.reload()
        #expect(fresh.problem(for: "registry")?.hasPrefix("\(folder)/default.yaml:") == true)
    }
}
