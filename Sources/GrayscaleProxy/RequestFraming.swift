import NIOHTTP1

/// How a request's body is framed on its way to the upstream. The proxy decides it from
/// what its own decoder parsed, never by passing the client's `Content-Length` or
/// `Transfer-Encoding` through: a framing the upstream could read differently from the
/// proxy is how one request hides another (request smuggling).
enum RequestFraming: Equatable {
    /// No body.
    case none
    /// Exactly this many bytes.
    case length(Int)
    /// A body of unknown length, sent chunked.
    case chunked

    /// Why a request is refused before it goes anywhere: the status the client sees and
    /// the reason logged and counted (`grayscale_requests_refused_total{reason}`).
    struct Refusal: Error, Equatable {
        var status: HTTPResponseStatus
        var reason: String
        var detail: String
    }

    /// The framing of `head`'s body, or why the proxy refuses the request.
    static func of(_ head: HTTPRequestHead) -> Result<RequestFraming, Refusal> {
        if head.method == .CONNECT {
            return .failure(Refusal(status: .methodNotAllowed, reason: "connect", detail: "CONNECT is not supported: this is not a forward proxy"))
        }
        // Most requests have neither header: no arrays for them.
        let encodings = head.headers.contains(name: "transfer-encoding") ? head.headers["transfer-encoding"] : []
        let lengths = head.headers.contains(name: "content-length") ? head.headers["content-length"] : []
        var framing = RequestFraming.none
        if !encodings.isEmpty {
            guard encodings.count == 1 else {
                return .failure(Refusal(status: .badRequest, reason: "transfer-encoding",
                                        detail: "more than one Transfer-Encoding header"))
            }
            let codings = encodings[0].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard codings.count == 1, isASCIICaseInsensitiveEqual(codings[0], "chunked") else {
                return .failure(Refusal(status: .notImplemented, reason: "transfer-encoding",
                                        detail: "transfer coding '\(encodings[0].prefix(64))' is not supported (only chunked)"))
            }
            guard lengths.isEmpty else {
                return .failure(Refusal(status: .badRequest, reason: "framing", detail: "Content-Length and Transfer-Encoding together"))
            }
            framing = .chunked
        } else if !lengths.isEmpty {
            let values = Set(lengths.flatMap { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } })
            guard values.count == 1, let value = values.first, !value.isEmpty, value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                  value.utf8.count <= 18, let length = Int(value) else {
                return .failure(Refusal(status: .badRequest, reason: "framing", detail: "invalid Content-Length"))
            }
            framing = length > 0 ? .length(length) : .none
        }
        if head.method == .TRACE, framing != .none {
            return .failure(Refusal(status: .badRequest, reason: "trace-body", detail: "TRACE must not have a body"))
        }
        return .success(framing)
    }

    /// True when the decoder stops parsing after this request (an upgrade of any kind):
    /// whatever the client sends next is not HTTP the proxy reads.
    static func endsHTTP(_ head: HTTPRequestHead) -> Bool {
        // `Upgrade` is looked for first: most requests have none, and no array is made for them.
        head.method == .CONNECT
            || (head.headers.contains(name: "upgrade")
                && head.headers[canonicalForm: "connection"].contains { isASCIICaseInsensitiveEqual($0, "upgrade") })
    }

    /// Methods whose requests are expected to carry a body: sent without one, they say so (`Content-Length: 0`).
    static func expectsBody(_ method: HTTPMethod) -> Bool {
        switch method {
        case .POST, .PUT, .PATCH: return true
        default: return false
        }
    }

    /// `headers` with the proxy's own framing in place of the client's.
    func applied(to headers: inout HTTPHeaders, method: HTTPMethod) {
        headers.remove(name: "content-length")
        headers.remove(name: "transfer-encoding")
        switch self {
        case .length(let length): headers.add(name: "content-length", value: String(length))
        case .chunked: headers.add(name: "transfer-encoding", value: "chunked")
        case .none: if Self.expectsBody(method) { headers.add(name: "content-length", value: "0") }
        }
    }
}
