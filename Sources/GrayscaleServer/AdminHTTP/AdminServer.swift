import Crypto
import Foundation
import GrayscaleAdminContract
import GrayscaleCore
import GrayscaleProxy
import HTTPTypes
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import OpenAPIHummingbird
import OpenAPIRuntime

/// The admin address's one router, on Hummingbird: the admin API registered from the
/// generated contract (`openapi.yaml`), and beside it the dashboard, `/healthz`,
/// `/metrics`, `/stats`, the fleet's routing long poll and Slack's endpoints. The admin
/// token, Slack's signature, the body limit, each route's time limit and the one error
/// shape are middleware.
public enum AdminServer {
    public typealias Context = BasicRequestContext

    /// Bodies over this are refused (413) before any handler reads them.
    public static let maxBodyBytes = 1 << 20

    /// Time limits: the long poll answers within 25 s by itself; nothing else should take long.
    public struct Timeouts: Sendable {
        public var routing: Duration = .seconds(35)
        public var other: Duration = .seconds(15)
        public init() {}
    }

    /// Serve's router: everything the admin address answers.
    public static func router(api: AdminAPI, timeouts: Timeouts = .init(), logger: Logger) throws -> Router<Context> {
        let (router, routes) = base(statistics: api.statistics, timeouts: timeouts, logger: logger)
        get("/", on: router, routes) { _, _ in text(DashboardPage.html, contentType: "text/html; charset=utf-8") }
        get("/metrics", on: router, routes) { _, _ in
            text(api.registry.emitToString() + (api.accessLog?.prometheusText ?? ""), contentType: "text/plain; version=0.0.4; charset=utf-8")
        }
        // The fleet's long poll: it ends when its client goes (the connection's inbound side closes).
        get("/api/v1/routing", on: router, routes) { request, _ in
            let after = FormFields.parse(request.uri.query ?? "")["after"]
            let snapshot = try await request.body.consumeWithCancellationOnInboundClose { _ in try await api.routingSnapshot(after: after) }
            return try json(snapshot)
        }

        let slackRoutes = router.group("/slack")
        if let slack = api.slack { slackRoutes.add(middleware: SlackSignatureMiddleware(endpoint: slack)) }
        for path in ["/slack/events", "/slack/commands"] {
            routes.add(.post, path)
            slackRoutes.post(RouterPath(String(path.dropFirst("/slack/".count)))) { request, _ in
                guard let slack = api.slack else {
                    throw AdminProblem(.notFound, "Slack is not configured (set GRAYSCALE_SLACK_SIGNING_SECRET)")
                }
                var request = request
                let body = try await request.collectBody(upTo: maxBodyBytes)
                let answer = await slack.handle(path: path, headers: request.headers, body: Array(buffer: body))
                return text(answer.body, status: answer.status, contentType: answer.contentType)
            }
        }

        // The contract's operations; POST needs the admin token.
        let apiRoutes = router.group()
            .add(middleware: AdminTokenMiddleware(token: api.adminToken))
            .add(middleware: QueryNamesMiddleware(routes: routes))
        try api.registerHandlers(on: RecordingTransport(inner: apiRoutes, routes: routes), serverURL: URL(string: "/")!)
        return router
    }

    /// `grayscale proxy`'s admin address: `/stats`, `/healthz` and the same error shape.
    public static func statsRouter(statistics: ProxyStatistics, logger: Logger) -> Router<Context> {
        base(statistics: statistics, timeouts: .init(), logger: logger).router
    }

    /// What both admin addresses have: the middleware every route goes through, `/healthz` and `/stats`.
    static func base(statistics: ProxyStatistics, timeouts: Timeouts, logger: Logger) -> (router: Router<Context>, routes: RouteTable) {
        let routes = RouteTable()
        let router = Router(context: Context.self, options: .autoGenerateHeadEndpoints)
        router.add(middleware: ProblemMiddleware(routes: routes, logger: logger))
        router.add(middleware: TimeoutMiddleware(timeouts: timeouts))
        router.add(middleware: BodyLimitMiddleware())
        get("/healthz", on: router, routes) { _, _ in text("ok\n") }
        get("/stats", on: router, routes) { request, _ in
            do {
                return text(try statistics.statsJSON(since: FormFields.parse(request.uri.query ?? "")["since"]), contentType: "application/json")
            } catch {
                throw AdminProblem(.badRequest, "\(error)")
            }
        }
        return (router, routes)
    }

    /// A GET route, recorded for the 405 answers.
    static func get(_ path: String, on router: Router<Context>, _ routes: RouteTable,
                    _ handler: @escaping @Sendable (Request, Context) async throws -> Response) {
        routes.add(.get, path)
        router.get(RouterPath(path), use: handler)
    }

    static func text(_ body: String, status: HTTPResponse.Status = .ok, contentType: String = "text/plain; charset=utf-8") -> Response {
        Response(status: status, headers: [.contentType: contentType], body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    static func json(_ value: some Encodable) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
    }
}

// MARK: - Routes known, for 405

/// Every method and path template the router answers, so that a known path asked with
/// another method is a 405 naming the methods it has (Hummingbird's router says 404).
final class RouteTable: Sendable {
    private let entries = NIOLockedValueBox<[(method: HTTPRequest.Method, template: String, path: [Substring])]>([])

    func add(_ method: HTTPRequest.Method, _ path: String) {
        entries.withLockedValue { $0.append((method, path, path.split(separator: "/"))) }
    }

    /// The template `path` was registered as for `method` (`/api/v1/services/{service}`).
    func template(for path: String, method: HTTPRequest.Method) -> String? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        return entries.withLockedValue { entries in
            entries.first { $0.method == method && Self.matches($0.path, parts) }?.template
        }
    }

    static func matches(_ template: [Substring], _ parts: [Substring]) -> Bool {
        template.count == parts.count && zip(template, parts).allSatisfy { template, part in
            template.first == "{" || template.first == ":" || template == part
        }
    }

    /// The methods `path` is answered for (HEAD wherever GET is).
    func methods(for path: String) -> [HTTPRequest.Method] {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        let matching = entries.withLockedValue { entries in
            entries.filter { Self.matches($0.path, parts) }.map(\.method)
        }
        var methods: [HTTPRequest.Method] = []
        for method in matching where !methods.contains(method) { methods.append(method) }
        if methods.contains(.get) && !methods.contains(.head) { methods.append(.head) }
        return methods
    }
}

/// A transport that records what the generated code registers, then registers it on Hummingbird.
struct RecordingTransport: ServerTransport {
    let inner: RouterGroup<AdminServer.Context>
    let routes: RouteTable

    func register(_ handler: @escaping @Sendable (HTTPRequest, HTTPBody?, ServerRequestMetadata) async throws -> (HTTPResponse, HTTPBody?),
                  method: HTTPRequest.Method, path: String) throws {
        routes.add(method, path)
        inner.register(handler, method: method, path: path)
    }
}

// MARK: - Middleware

/// Every error in one shape, `{"error": "..."}`: the handlers' `AdminProblem`s, requests
/// the generated code could not read against the document (400), Hummingbird's own
/// (404, 413), 405 for a known path with another method, and anything else a 500 that is
/// logged. A cancelled request (its client went) is passed on: nobody reads the answer.
struct ProblemMiddleware: RouterMiddleware {
    typealias Context = AdminServer.Context
    let routes: RouteTable
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch is CancellationError {
            throw CancellationError()
        } catch let error as HTTPParserError {
            throw error  // bytes that are not HTTP: Hummingbird answers 400 and closes
        } catch {
            let problem = problem(for: error, request: request)
            if problem.status.kind == .serverError {
                logger.error("admin request failed", metadata: ["request": "\(request.method) \(request.uri.path)", "problem": "\(error)"])
            }
            return Response(status: problem.status, headers: problem.httpHeaderFields,
                            body: .init(byteBuffer: ByteBuffer(string: problem.json)))
        }
    }

    func problem(for error: any Error, request: Request) -> AdminProblem {
        switch error {
        case let problem as AdminProblem:
            return problem
        case let error as ServerError:
            if let problem = error.underlyingError as? AdminProblem { return problem }
            if let error = error.underlyingError as? GrayscaleError { return problem(for: error, request: request) }
            let why = "\(error.underlyingError)"
            let message = error.causeDescription == why ? why : "\(error.causeDescription): \(why)"
            // The runtime knows a client's mistake (406, 415, 400) when it sees one.
            if error.httpStatus.kind == .clientError { return AdminProblem(error.httpStatus, message) }
            // Thrown before an input existed: the request does not read as the document says.
            if error.operationInput == nil { return AdminProblem(.badRequest, message) }
            return AdminProblem(.internalServerError, "\(error.operationID): \(message)")
        case let error as GrayscaleError:
            return AdminProblem(error.kind == .notFound ? .notFound : .internalServerError, error.message)
        case let error as any HTTPResponseError where error.status == .notFound:
            let allowed = routes.methods(for: request.uri.path)
            guard !allowed.isEmpty else { return AdminProblem(.notFound, "no route for \(request.method) \(request.uri.path)") }
            return AdminProblem(.methodNotAllowed, "\(request.uri.path) answers \(allowed.map(\.rawValue).joined(separator: ", ")), not \(request.method)",
                                headers: [.allow: allowed.map(\.rawValue).joined(separator: ", ")])
        case let error as any HTTPResponseError where error.status == .contentTooLarge:
            return AdminProblem(.contentTooLarge, "body: more than \(AdminServer.maxBodyBytes) bytes")
        case let error as HTTPError:
            return AdminProblem(error.status, error.body ?? error.status.reasonPhrase)
        case let error as any HTTPResponseError:
            return AdminProblem(error.status, error.status.reasonPhrase)
        default:
            return AdminProblem(.internalServerError, "\(error)")
        }
    }
}

/// Every route has a time limit: a handler still running when it is up is cancelled and
/// the client gets a 503 in the error shape. Cancelling ends a wait (the long poll) at
/// once; work that does not check for cancellation (a database write, a bot command)
/// finishes first and its answer is dropped: a 503 does not say the command did not run,
/// which is what `Idempotency-Key` is for.
struct TimeoutMiddleware: RouterMiddleware {
    typealias Context = AdminServer.Context
    let timeouts: AdminServer.Timeouts

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // Compared by segments, as the router matches (`//api/v1/routing/` is the long poll too).
        let limit = request.uri.path.split(separator: "/") == ["api", "v1", "routing"] ? timeouts.routing : timeouts.other
        return try await withoutActuallyEscaping(next) { next in
            let next = UnsafeSendableNext(next: next)
            return try await withThrowingTaskGroup(of: Response.self) { group in
                group.addTask { try await next.next(request, context) }
                group.addTask {
                    try await Task.sleep(for: limit)
                    throw AdminProblem(.serviceUnavailable, "\(request.method) \(request.uri.path) took longer than its limit of \(limit)")
                }
                defer { group.cancelAll() }
                return try await group.next()!
            }
        }
    }

    /// `next` runs within this call (the group ends before it returns); Hummingbird's
    /// signature just does not say it is Sendable.
    struct UnsafeSendableNext: @unchecked Sendable {
        let next: (Request, Context) async throws -> Response
    }
}

/// Bodies are read whole (they are small: commands, Slack payloads) and bounded; GET and
/// HEAD are passed on untouched so a long poll can see its client go.
struct BodyLimitMiddleware: RouterMiddleware {
    typealias Context = AdminServer.Context

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.method != .get, request.method != .head else { return try await next(request, context) }
        var request = request
        _ = try await request.collectBody(upTo: AdminServer.maxBodyBytes)
        return try await next(request, context)
    }
}

/// What changes state needs `Authorization: Bearer $GRAYSCALE_ADMIN_TOKEN`; reads are open.
struct AdminTokenMiddleware: RouterMiddleware {
    typealias Context = AdminServer.Context
    let token: String?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.method != .get, request.method != .head else { return try await next(request, context) }
        guard let token else { throw AdminProblem(.forbidden, "no admin token is configured (set GRAYSCALE_ADMIN_TOKEN)") }
        guard let given = request.headers[.authorization], constantTimeEqual(given, "Bearer \(token)") else {
            throw AdminProblem(.unauthorized, "a valid Authorization: Bearer token is required", headers: [.wwwAuthenticate: "Bearer"])
        }
        return try await next(request, context)
    }
}

/// A query parameter the document does not declare for the operation is refused (400):
/// a misspelt `limt=5` or an object sent exploded (`a=1`) would otherwise be ignored and
/// answered as if it had not been sent. Bounded headers are checked as sent.
struct QueryNamesMiddleware: RouterMiddleware {
    typealias Context = AdminServer.Context
    let routes: RouteTable

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let method = request.method == .head ? .get : request.method
        if let query = request.uri.query, let template = routes.template(for: request.uri.path, method: method) {
            let declared = AdminAPI.queryParameters[template] ?? []
            for name in FormFields.parse(query).keys.sorted() where !declared.contains(name) {
                let expected = declared.isEmpty ? "it takes none" : "it takes \(declared.sorted().joined(separator: ", "))"
                throw AdminProblem(.badRequest, "query: \(name): not a parameter of \(method) \(template) (\(expected))")
            }
        }
        for (name, limit) in AdminAPI.headerLimits {
            for value in request.headers[values: HTTPField.Name(name)!] {
                try Contract.check(value, length: 0...limit, "header: \(name)", octets: true)
            }
        }
        // Every operation answers JSON: a client that takes none is refused before anything runs.
        if let accept = request.headers[.accept], !Self.acceptsJSON(accept) {
            throw AdminProblem(.notAcceptable, "header: Accept: this API answers application/json (got '\(accept)')")
        }
        return try await AdminAPI.$idempotencyKey.withValue(request.headers[HTTPField.Name("Idempotency-Key")!]) {
            try await next(request, context)
        }
    }

    /// Whether an `Accept` value admits `application/json` (a media range of it, `*/*`, `application/*`, not with q=0).
    static func acceptsJSON(_ accept: String) -> Bool {
        accept.split(separator: ",").contains { range in
            let parts = range.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            guard let type = parts.first, ["application/json", "application/*", "*/*"].contains(type) else { return false }
            return !parts.dropFirst().contains { $0.replacingOccurrences(of: " ", with: "").hasPrefix("q=0") && Double($0.dropFirst(2)) == 0 }
        }
    }
}

/// Slack's endpoints answer only requests Slack signed, recently.
struct SlackSignatureMiddleware: RouterMiddleware {
    typealias Context = AdminServer.Context
    let endpoint: SlackEndpoint

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var request = request
        let body = try await request.collectBody(upTo: AdminServer.maxBodyBytes)
        try endpoint.verify(headers: request.headers, body: Array(buffer: body))
        return try await next(request, context)
    }
}

/// Whether two secrets are equal, in time that does not depend on where they differ:
/// their SHA-256 digests, compared by swift-crypto in constant time (the lengths are
/// hidden too).
func constantTimeEqual(_ lhs: String, _ rhs: String) -> Bool {
    SHA256.hash(data: Array(lhs.utf8)) == SHA256.hash(data: Array(rhs.utf8))
}

// MARK: - Running

/// A Hummingbird application on `host:port` (0 picks a free port), running until
/// `stop()`: serve's and the proxy's admin addresses, and tests.
public final class AdminHTTPServer: Sendable {
    public let localAddress: SocketAddress
    private let group: ServiceGroup
    private let task: Task<Void, any Error>

    private init(localAddress: SocketAddress, group: ServiceGroup, task: Task<Void, any Error>) {
        self.localAddress = localAddress
        self.group = group
        self.task = task
    }

    public static func start(host: String, port: Int, router: Router<AdminServer.Context>, group: any EventLoopGroup,
                             logger: Logger) async throws -> AdminHTTPServer {
        let (addresses, continuation) = AsyncThrowingStream.makeStream(of: SocketAddress.self)
        // Hummingbird logs a line per request at debug and its start at info: quieter than the service's own log.
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .notice)
        let app = Application(router: router, server: .http1(configuration: .init(idleTimeout: .seconds(75))),
                              configuration: .init(address: .hostname(host, port: port), serverName: nil, reuseAddress: true),
                              onServerRunning: { channel in
                                  if let address = channel.localAddress { continuation.yield(address) }
                              },
                              eventLoopGroupProvider: .shared(group), logger: quiet)
        let services = ServiceGroup(configuration: .init(services: [.init(service: app)], logger: quiet))
        let task = Task {
            do {
                try await services.run()
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
                throw error
            }
        }
        for try await address in addresses { return AdminHTTPServer(localAddress: address, group: services, task: task) }
        task.cancel()
        throw GrayscaleError("admin server on \(host):\(port) did not start")
    }

    /// Stops accepting, lets requests in flight end (for `grace` at most, then cancels
    /// them), and returns when the server has stopped.
    public func stop(grace: Duration = .seconds(10)) async throws {
        await group.triggerGracefulShutdown()
        let task = self.task
        let deadline = Task {
            try await Task.sleep(for: grace)
            task.cancel()
        }
        defer { deadline.cancel() }
        _ = await task.result
    }
}
