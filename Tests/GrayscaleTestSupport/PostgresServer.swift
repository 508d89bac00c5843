import Foundation
import NIOConcurrencyHelpers

/// A real PostgreSQL server (Debian's `postgresql` package) for the tests: a fresh data
/// directory under /tmp, listening on 127.0.0.1 only, on a free port, with password
/// (SCRAM) authentication. PostgreSQL refuses to run as root, so when the tests run as
/// root the server runs as the `postgres` user the package created. Stopped when the test
/// process exits.
public final class PostgresServer: Sendable {
    public static let user = "grayscale"
    public static let password = "grayscale-test-password"
    public let port: Int
    public let dataDirectory: String
    let binaries: String

    /// One server for the whole test process, started on first use. Tests that stop or
    /// restart PostgreSQL start one of their own instead.
    public static let shared: Result<PostgresServer, PostgresServerError> = Result { try PostgresServer.start() }.mapError { $0 as? PostgresServerError ?? PostgresServerError(String(describing: $0)) }

    private static let started = NIOLockedValueBox<[PostgresServer]>([])
    private static let databaseCounter = NIOLockedValueBox(0)

    /// Every process the tests start finds the password where Grayscale looks for it.
    public static var environment: [String: String] { ["GRAYSCALE_DB_PASSWORD": password] }

    public static func start() throws -> PostgresServer {
        guard let binaries = ["/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin"]
            .first(where: { FileManager.default.isExecutableFile(atPath: $0 + "/pg_ctl") }) else {
            throw PostgresServerError("PostgreSQL's server is not installed (no pg_ctl under /usr/lib/postgresql/*/bin); `make test-deps` installs Debian's postgresql")
        }
        setenv("GRAYSCALE_DB_PASSWORD", password, 1)
        let directory = "/tmp/grayscale-pg-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let passwordFile = directory + ".pw"
        try password.write(toFile: passwordFile, atomically: true, encoding: .utf8)
        if getuid() == 0 {
            _ = try run("/bin/chown", ["-R", "postgres:postgres", directory, passwordFile])
        }
        defer { try? FileManager.default.removeItem(atPath: passwordFile) }
        try asServerUser(binaries + "/initdb", ["-D", directory, "-U", user, "-A", "scram-sha-256", "--pwfile=\(passwordFile)",
                                                "-E", "UTF8", "--locale=C", "--no-sync"])
        var lastError: (any Error)?
        for _ in 0..<5 {
            let server = PostgresServer(port: freePort(), dataDirectory: directory, binaries: binaries)
            do {
                try server.startServer()
                started.withLockedValue { $0.append(server) }
                atexit { PostgresServer.stopAll() }
                return server
            } catch {
                lastError = error
            }
        }
        throw lastError ?? PostgresServerError("PostgreSQL did not start")
    }

    init(port: Int, dataDirectory: String, binaries: String) {
        self.port = port
        self.dataDirectory = dataDirectory
        self.binaries = binaries
    }

    /// A new, empty database on this server; its URL (the password is in the environment).
    public func createDatabase(_ prefix: String = "grayscale") throws -> String {
        let number = Self.databaseCounter.withLockedValue { $0 += 1; return $0 }
        let name = "\(prefix)_\(getpid())_\(number)"
        try Self.run(binaries + "/createdb", ["-h", "127.0.0.1", "-p", "\(port)", "-U", Self.user, name], environment: ["PGPASSWORD": Self.password])
        return url(name)
    }

    public func url(_ database: String) -> String { "postgres://\(Self.user)@127.0.0.1:\(port)/\(database)" }

    public func startServer() throws {
        try Self.asServerUser(binaries + "/pg_ctl", [
            "-D", dataDirectory, "-l", dataDirectory + "/server.log", "-w", "-t", "30",
            "-o", "-p \(port) -k \(dataDirectory) -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            "start",
        ])
    }

    /// Stops the server: `fast` ends sessions and checkpoints; `immediate` is a crash.
    public func stopServer(mode: String = "fast") throws {
        try Self.asServerUser(binaries + "/pg_ctl", ["-D", dataDirectory, "-m", mode, "-w", "stop"])
    }

    static func stopAll() {
        for server in started.withLockedValue({ $0 }) {
            try? server.stopServer(mode: "immediate")
            try? FileManager.default.removeItem(atPath: server.dataDirectory)
        }
    }

    static func asServerUser(_ executable: String, _ arguments: [String]) throws {
        if getuid() == 0 {
            _ = try run("/sbin/runuser", ["-u", "postgres", "--", executable] + arguments)
        } else {
            _ = try run(executable, arguments)
        }
    }

    /// Runs a program to its end. Not Foundation's `Process`: on Linux it learns that a
    /// child ended from a descriptor the child inherits, and the server `pg_ctl` starts
    /// inherits it too, so `pg_ctl start` would never be seen to end.
    @discardableResult
    static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws -> String {
        let outputPath = NSTemporaryDirectory() + "grayscale-pg-output-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let env = ProcessInfo.processInfo.environment.merging(environment) { $1 }.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { argv.forEach { free($0) }; env.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, executable, &actions, nil, argv, env)
        guard spawned == 0 else { throw PostgresServerError("cannot run \(executable): \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        let exited = status & 0x7f == 0
        let code = (status >> 8) & 0xff
        guard exited && code == 0 else {
            throw PostgresServerError("\(executable) \(arguments.joined(separator: " ")) failed (status \(status)): \(text)")
        }
        return text
    }

    /// A port nothing listens on now (bound and released; PostgreSQL takes it right after).
    public static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

public struct PostgresServerError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

extension PostgresServer {
    /// Runs one SQL statement with psql against the database `url` names.
    public func psql(_ url: String, _ sql: String) throws {
        let database = String(url.split(separator: "/").last ?? "")
        try Self.run(binaries + "/psql", ["-h", "127.0.0.1", "-p", "\(port)", "-U", Self.user, "-d", database, "-v", "ON_ERROR_STOP=1", "-c", sql],
                     environment: ["PGPASSWORD": Self.password])
    }
}
