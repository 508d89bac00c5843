import Foundation
import GrayscaleCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO

/// Where a shared PostgreSQL database is: `postgres://USER@HOST:PORT/DB`. The password
/// never comes from the URL (it would show in process lists, shell history and logs) but
/// from `$GRAYSCALE_DB_PASSWORD` or the file `$GRAYSCALE_DB_PASSWORD_FILE` names.
/// TLS as libpq names it: `?sslmode=require` (the default, with the server's certificate
/// verified against the system's roots or `&sslrootcert=FILE`), `prefer` (the default on
/// a loopback host) or `disable`.
public struct PostgresLocation: Hashable, Sendable, CustomStringConvertible {
    public enum TLSMode: String, Hashable, Sendable { case disable, prefer, require }
    public var user: String
    public var host: String
    public var port: Int
    public var database: String
    public var password: String?
    public var tls: TLSMode
    public var rootCertificate: String?

    public static func isURL(_ text: String) -> Bool { text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") }

    /// Parses `url`; `environment` supplies the password.
    public init(url: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws(GrayscaleError) {
        func bad(_ reason: String) -> GrayscaleError {
            GrayscaleError("database URL \(PostgresLocation.redacted(url)): \(reason) (expected postgres://USER@HOST:PORT/DATABASE)")
        }
        guard Self.isURL(url), let components = URLComponents(string: url) else { throw bad("not a postgres:// URL") }
        guard components.password == nil else {
            throw bad("carries a password; put it in $GRAYSCALE_DB_PASSWORD or a file named by $GRAYSCALE_DB_PASSWORD_FILE, never in an argument")
        }
        guard let user = components.user, !user.isEmpty else { throw bad("no user") }
        guard let host = components.host, !host.isEmpty else { throw bad("no host") }
        let database = String(components.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty, !database.contains("/") else { throw bad("no database name after the host") }
        self.user = user.removingPercentEncoding ?? user
        self.host = host
        self.port = components.port ?? 5432
        self.database = database.removingPercentEncoding ?? database
        let query = Dictionary((components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        for name in query.keys where !["sslmode", "sslrootcert"].contains(name) {
            throw bad("unknown parameter \(name) (known: sslmode, sslrootcert)")
        }
        let loopback = ["127.0.0.1", "::1", "[::1]", "localhost"].contains(host)
        if let mode = query["sslmode"] {
            guard let tls = TLSMode(rawValue: mode) else { throw bad("sslmode \(mode): expected disable, prefer or require") }
            self.tls = tls
        } else {
            self.tls = loopback ? .prefer : .require
        }
        self.rootCertificate = query["sslrootcert"]
        if let password = environment["GRAYSCALE_DB_PASSWORD"] {
            self.password = password
        } else if let file = environment["GRAYSCALE_DB_PASSWORD_FILE"] {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw GrayscaleError("$GRAYSCALE_DB_PASSWORD_FILE: cannot read \(file)")
            }
            self.password = text.trimmingCharacters(in: .newlines)
        }
    }

    /// The URL as errors and logs show it: never with a password.
    public var description: String { "postgres://\(user)@\(host):\(port)/\(database)" }

    /// The URL with anything between `//` and `@` that could be a password cut out, parsable or not.
    static func redacted(_ url: String) -> String {
        guard let scheme = url.range(of: "//"), let at = url[scheme.upperBound...].lastIndex(of: "@") else { return url }
        let userInfo = url[scheme.upperBound..<at]
        guard let colon = userInfo.firstIndex(of: ":") else { return url }
        return String(url[..<colon]) + ":…" + String(url[at...])
    }
}

/// A PostgreSQL database that several `serve` replicas share. Every write transaction
/// first takes one transaction-scoped advisory lock, so writers are serialized exactly as
/// SQLite's IMMEDIATE transactions serialize them, and the compare-and-swap and lease
/// checks read what the last writer committed. Reads run in a REPEATABLE READ snapshot.
/// The store's API is synchronous (as it is on SQLite): each call borrows a connection
/// and waits for PostgreSQL on an event loop of the engine's own, never the caller's.
final class PostgresEngine: StoreEngine, @unchecked Sendable {
    let location: PostgresLocation
    let busyTimeout: TimeInterval
    let group: MultiThreadedEventLoopGroup
    let logger: Logger
    /// Idle connections; `@unchecked Sendable` because every mutable state is behind this lock.
    private let idle = NIOLockedValueBox<(connections: [PostgresConnection], nextID: Int, closed: Bool)>(([], 0, false))
    static let maxIdle = 4
    /// The key of the advisory lock every writer holds ("gray" in ASCII).
    static let writerLock: Int64 = 0x6772_6179
    static let routingChannel = "grayscale_routing"

    var name: String { location.description }

    init(location: PostgresLocation, busyTimeout: TimeInterval) {
        self.location = location
        self.busyTimeout = busyTimeout
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var logger = Logger(label: "grayscale.postgres")
        logger.logLevel = .critical
        self.logger = logger
    }

    deinit {
        close()
        try? group.syncShutdownGracefully()
    }

    /// How long a statement may run, and how long the engine waits for any answer.
    static let statementTimeout: TimeInterval = 30
    /// A session that sits in a transaction this long (a replica frozen or cut off while
    /// holding the writers' lock) is ended by the server, which frees the lock.
    var idleInTransactionTimeout: TimeInterval { max(5, busyTimeout * 2) }

    func configuration() throws -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS
        switch location.tls {
        case .disable:
            tls = .disable
        case .prefer, .require:
            var settings = TLSConfiguration.makeClientConfiguration()
            if let root = location.rootCertificate { settings.trustRoots = .file(root) }
            let context = try NIOSSLContext(configuration: settings)
            tls = location.tls == .require ? .require(context) : .prefer(context)
        }
        var configuration = PostgresConnection.Configuration(host: location.host, port: location.port, username: location.user,
                                                             password: location.password, database: location.database, tls: tls)
        configuration.options.connectTimeout = .milliseconds(Int64(max(busyTimeout, 1) * 1000))
        configuration.options.additionalStartupParameters = [
            ("application_name", "grayscale"),
            ("statement_timeout", "\(Int(Self.statementTimeout * 1000))"),
            ("idle_in_transaction_session_timeout", "\(Int(idleInTransactionTimeout * 1000))"),
        ]
        return configuration
    }

    /// After a failed connection attempt, calls fail at once with its error for this long
    /// instead of each waiting out a connect timeout of its own: while PostgreSQL is
    /// unreachable (a blackholed host answers nothing for the whole timeout) the threads
    /// that call the store are not tied up, and the server gets one attempt per interval.
    static let reconnectInterval: TimeAmount = .seconds(1)
    private let unreachable = NIOLockedValueBox<(until: NIODeadline, error: (any Error)?)>((.distantPast, nil))
    /// Connection attempts made, for the tests.
    let connectAttempts = NIOLockedValueBox(0)

    func connect() throws -> PostgresConnection {
        let now = NIODeadline.now()
        if let error = unreachable.withLockedValue({ now < $0.until ? $0.error : nil }) { throw error }
        let id = idle.withLockedValue { state -> Int in state.nextID += 1; return state.nextID }
        connectAttempts.withLockedValue { $0 += 1 }
        do {
            let connection = try PostgresConnection.connect(on: group.next(), configuration: try configuration(), id: id, logger: logger).wait()
            unreachable.withLockedValue { $0 = (.distantPast, nil) }
            return connection
        } catch {
            if Self.isConnectionProblem(error) { unreachable.withLockedValue { $0 = (.now() + Self.reconnectInterval, error) } }
            throw error
        }
    }

    /// Connects for a long-lived purpose (the routing watch), on the engine's event loop.
    func connectAsync() async throws -> PostgresConnection {
        let id = idle.withLockedValue { state -> Int in state.nextID += 1; return state.nextID }
        return try await PostgresConnection.connect(on: group.next(), configuration: try configuration(), id: id, logger: logger)
    }

    func withConnection<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        let reused = idle.withLockedValue { state -> PostgresConnection? in
            while let connection = state.connections.popLast() { if !connection.isClosed { return connection } }
            return nil
        }
        let connection = try reused ?? connect()
        do {
            let result = try body(connection)
            giveBack(connection)
            return result
        } catch let broken as BrokenConnection {
            // A connection whose transaction could not be closed cleanly is not reused.
            connection.discard()
            throw broken.error
        } catch {
            if Self.isConnectionProblem(error) { connection.discard() } else { giveBack(connection) }
            throw error
        }
    }

    private func giveBack(_ connection: PostgresConnection) {
        let keep = idle.withLockedValue { state -> Bool in
            guard !state.closed, !connection.isClosed, state.connections.count < Self.maxIdle else { return false }
            state.connections.append(connection)
            return true
        }
        if !keep { connection.discard() }
    }

    func close() {
        let connections = idle.withLockedValue { state -> [PostgresConnection] in
            state.closed = true
            defer { state.connections = [] }
            return state.connections
        }
        for connection in connections { try? connection.close().wait() }
    }

    // MARK: - Transactions

    func read<T>(_ body: (any SQLExecutor) throws -> T) throws -> T {
        try transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", locking: false, body)
    }

    func write<T>(_ body: (any SQLExecutor) throws -> T) throws -> T {
        try transaction("BEGIN ISOLATION LEVEL READ COMMITTED", locking: true, body)
    }

    private func transaction<T>(_ begin: String, locking: Bool, _ body: (any SQLExecutor) throws -> T) throws -> T {
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try withConnection { connection in
                    let session = Session(connection: connection, logger: logger)
                    try session.execute(begin, [])
                    do {
                        if locking {
                            try session.execute("SET LOCAL lock_timeout = '\(Int(busyTimeout * 1000))ms'", [])
                            _ = try session.rows("SELECT pg_advisory_xact_lock(\(Self.writerLock))", [])
                        }
                        let result = try body(session)
                        do {
                            try session.execute("COMMIT", [])
                        } catch {
                            // The server may have committed before the answer was lost.
                            throw BrokenConnection(error: CommitOutcomeUnknown(error: error))
                        }
                        return result
                    } catch let broken as BrokenConnection {
                        throw broken
                    } catch {
                        do { try session.execute("ROLLBACK", []) } catch { throw BrokenConnection(error: error) }
                        throw error
                    }
                }
            } catch {
                // Serialization failures and deadlocks are PostgreSQL asking for the transaction again.
                guard attempt < 5, let state = Self.sqlState(error), state == "40001" || state == "40P01" else { throw error }
            }
        }
    }

    struct Session: SQLExecutor {
        let connection: PostgresConnection
        let logger: Logger

        @discardableResult
        func execute(_ sql: String, _ arguments: [SQLValue]) throws -> Int {
            try run(sql, arguments).metadata.rows ?? 0
        }

        func rows(_ sql: String, _ arguments: [SQLValue]) throws -> [SQLRow] {
            try run(sql, arguments).rows.map { row in SQLRow(try row.map { cell in (cell.columnName, try Self.value(cell)) }) }
        }

        func routingChanged() throws {
            _ = try rows("SELECT pg_notify('\(PostgresEngine.routingChannel)', '')", [])
        }

        func idsInserted(into table: String) throws {
            _ = try rows("SELECT setval(pg_get_serial_sequence('\(table.lowercased())', 'id'), COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM \(table)", [])
        }

        private func run(_ sql: String, _ arguments: [SQLValue]) throws -> PostgresQueryResult {
            var binds = PostgresBindings(capacity: arguments.count)
            for argument in arguments {
                switch argument {
                case .null: binds.appendNull()
                case .integer(let value): binds.append(value)
                case .real(let value): binds.append(value)
                case .text(let value): binds.append(value)
                case .blob(let value): try binds.append(value)
                case .boolean(let value): binds.append(value)
                // Milliseconds, as SQLite keeps them: both engines give back the same instant. (postgres-nio
                // truncates to microseconds; the half microsecond keeps a whole millisecond from landing 1 µs low.)
                case .date(let value):
                    let milliseconds = (value.timeIntervalSince1970 * 1000).rounded()
                    binds.append(Date(timeIntervalSince1970: milliseconds / 1000 + 0.000_000_5))
                }
            }
            let query = PostgresQuery(unsafeSQL: PostgresEngine.numberedPlaceholders(sql), binds: binds)
            let answer = connection.query(query, logger: logger)
            // No answer in time (the server's host gone without a reset): give the connection up.
            let deadline = connection.eventLoop.scheduleTask(in: .seconds(Int64(PostgresEngine.statementTimeout) + 5)) { [connection] in
                connection.discard()
            }
            answer.whenComplete { _ in deadline.cancel() }
            return try answer.wait()
        }

        /// A cell as a value; one that does not decode is an error, never a NULL in disguise.
        static func value(_ cell: PostgresCell) throws -> SQLValue {
            guard cell.bytes != nil else { return .null }
            switch cell.dataType {
            case .int8, .int4, .int2: return .integer(try cell.decode(Int64.self))
            case .float8, .float4, .numeric: return .real(try cell.decode(Double.self))
            case .bool: return .boolean(try cell.decode(Bool.self))
            case .timestamptz, .timestamp:
                let date = try cell.decode(Date.self)
                return .date(Date(timeIntervalSince1970: (date.timeIntervalSince1970 * 1000).rounded() / 1000))
            case .bytea: return .blob(try cell.decode(Data.self))
            case .void: return .null
            default: return .text(try cell.decode(String.self))
            }
        }
    }

    /// `?` placeholders as PostgreSQL numbers them (`$1`, `$2`, …); quoted text is left alone.
    static func numberedPlaceholders(_ sql: String) -> String {
        var result = ""
        result.reserveCapacity(sql.utf8.count + 8)
        var number = 0
        var quoted = false
        for character in sql {
            if character == "'" { quoted.toggle() }
            if character == "?" && !quoted {
                number += 1
                result += "$\(number)"
            } else {
                result.append(character)
            }
        }
        return result
    }

    // MARK: - Errors

    static func sqlState(_ error: any Error) -> String? {
        (error as? PSQLError)?.serverInfo?[.sqlState]
    }

    static func isConnectionProblem(_ error: any Error) -> Bool {
        if let error = error as? PSQLError {
            return [.connectionError, .serverClosedConnection, .clientClosedConnection, .uncleanShutdown,
                    .messageDecodingFailure, .unexpectedBackendMessage].contains(error.code)
        }
        return error is ChannelError || error is IOError || error is NIOConnectionError
            || String(describing: type(of: error)).contains("Connect")
    }

    func describe(_ error: any Error, doing what: String) -> GrayscaleError {
        if let error = error as? GrayscaleError { return error }
        let prefix = "\(name): cannot \(what)"
        if let unknown = error as? CommitOutcomeUnknown {
            return GrayscaleError("\(prefix): PostgreSQL did not confirm the commit (\(Self.reason(unknown.error))); it may or may not have been stored, check before repeating it")
        }
        if Self.isConnectionProblem(error) {
            return GrayscaleError("\(prefix): PostgreSQL is unreachable (\(Self.reason(error))); nothing was changed, try again", kind: .busy)
        }
        if let error = error as? PSQLError, let info = error.serverInfo {
            let state = info[.sqlState] ?? ""
            let message = info[.message] ?? "\(error.code)"
            switch state {
            case "40001", "40P01", "55P03", "57014":
                return GrayscaleError("\(prefix): the database is busy (\(message)); nothing was changed, try again", kind: .busy)
            case "57P01", "57P02", "57P03", "08000", "08003", "08006":
                return GrayscaleError("\(prefix): PostgreSQL is restarting or unreachable (\(message)); nothing was changed, try again", kind: .busy)
            case "28P01", "28000":
                return GrayscaleError("\(prefix): PostgreSQL refused the login (\(message)); set $GRAYSCALE_DB_PASSWORD or $GRAYSCALE_DB_PASSWORD_FILE")
            case "3D000":
                return GrayscaleError("\(prefix): \(message); create the database first (createdb \(location.database))")
            case "53100":
                return GrayscaleError("\(prefix): the database server's disk is full (\(message)); nothing was changed")
            default:
                return GrayscaleError("\(prefix): \(message) (SQLSTATE \(state))")
            }
        }
        return GrayscaleError("\(prefix): \(Self.reason(error))")
    }

    static func reason(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] { return message }
            if let underlying = error.underlying { return "\(error.code): \(underlying)" }
            return "\(error.code)"
        }
        return "\(error)"
    }

    // MARK: - Schema

    func migrate() throws(GrayscaleError) {
        do {
            try write { session in
                try session.execute("CREATE TABLE IF NOT EXISTS grayscale_migrations (identifier text PRIMARY KEY, appliedAt timestamptz NOT NULL)", [])
                let applied = try session.rows("SELECT identifier FROM grayscale_migrations", []).map { try $0.string("identifier") }
                let known = Set(PostgresSchema.migrations.map(\.identifier))
                let unknown = applied.filter { !known.contains($0) }.sorted()
                guard unknown.isEmpty else { throw GrayscaleDatabase.newerSchema(name, unknown) }
                for migration in PostgresSchema.migrations where !applied.contains(migration.identifier) {
                    for statement in migration.statements { try session.execute(statement, []) }
                    try session.execute("INSERT INTO grayscale_migrations (identifier, appliedAt) VALUES (?, ?)", [.text(migration.identifier), .date(Date())])
                }
            }
        } catch {
            throw describe(error, doing: "migrate")
        }
    }

    func appliedMigrations() throws -> [String] {
        try read { session in try session.rows("SELECT identifier FROM grayscale_migrations ORDER BY appliedAt, identifier", []).map { try $0.string("identifier") } }
    }

    func tables() throws -> [String] {
        try read { session in
            try session.rows("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' AND table_name <> 'grayscale_migrations' ORDER BY table_name", [])
                .map { try $0.string("table_name") }
        }
    }

    func columns(of table: String) throws -> [(name: String, kind: ColumnKind)] {
        try read { session in
            try session.rows("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
                             [.text(table.lowercased())]).map { row in
                let kind: ColumnKind = switch try row.string("data_type") {
                case "bigint", "integer", "smallint": .integer
                case "double precision", "real", "numeric": .real
                case "bytea": .blob
                case "boolean": .boolean
                case "timestamp with time zone", "timestamp without time zone": .date
                default: .text
                }
                return (try row.string("column_name"), kind)
            }
        }
    }
}

/// A transaction that could not be closed cleanly: its connection is not reused.
struct BrokenConnection: Error {
    let error: any Error
}

/// The connection failed while COMMIT was under way: the transaction may have been stored.
struct CommitOutcomeUnknown: Error {
    let error: any Error
}

extension PostgresConnection {
    /// Closes the connection without waiting for it (the connection stays alive until it is closed).
    func discard() {
        let closing: EventLoopFuture<Void> = close()
        closing.whenComplete { _ in withExtendedLifetime(self) {} }
    }
}
