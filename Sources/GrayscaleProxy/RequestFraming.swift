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

    /// The framing of `head`'s body, or why the proxy refuses the request. Read from the
    /// head's bytes: most requests have neither header, and none makes a string.
    static func of(_ head: RequestHead) -> Result<RequestFraming, Refusal> {
        if head.method == .CONNECT {
            return .failure(Refusal(status: .methodNotAllowed, reason: "connect", detail: "CONNECT is not supported: this is not a forward proxy"))
        }
        return head.withBytes { raw -> Result<RequestFraming, Refusal> in
            var encodings = 0
            var encoding: Range<Int>?
            var lengths = 0
            var length: (value: Int, digits: Int)?
            var badLength = false
            for field in head.fields {
                if RequestHead.isName(raw, field, "transfer-encoding") {
                    encodings += 1
                    encoding = field.value
                } else if RequestHead.isName(raw, field, "content-length") {
                    lengths += 1
                    // Every item of every Content-Length must be the same digits.
                    HTTP1.forEachListItem(HTTP1.bytes(raw, field.value)) { item in
                        guard let value = HTTP1.decimal(item), length.map({ $0 == (value, item.count) }) ?? true else {
                            badLength = true
                            return
                        }
                        length = (value, item.count)
                    }
                }
            }
            var framing = RequestFraming.none
            if let encoding {
                guard encodings == 1 else {
                    return .failure(Refusal(status: .badRequest, reason: "transfer-encoding", detail: "more than one Transfer-Encoding header"))
                }
                var codings = 0
                var chunked = false
                HTTP1.forEachListItem(HTTP1.bytes(raw, encoding)) { coding in
                    guard !coding.isEmpty else { return }
                    codings += 1
                    chunked = isASCIICaseInsensitiveEqual(coding, "chunked")
                }
                guard codings == 1, chunked else {
                    let text = String(HTTP1.string(raw, encoding).prefix(64))
                    return .failure(Refusal(status: .notImplemented, reason: "transfer-encoding",
                                            detail: "transfer coding '\(text)' is not supported (only chunked)"))
                }
                guard lengths == 0 else {
                    return .failure(Refusal(status: .badRequest, reason: "framing", detail: "Content-Length and Transfer-Encoding together"))
                }
                framing = .chunked
            } else if lengths > 0 {
                guard !badLength, let length else {
                    return .failure(Refusal(status: .badRequest, reason: "framing", detail: "invalid Content-Length"))
                }
                framing = length.value > 0 ? .length(length.value) : .none
            }
            if head.method == .TRACE, framing != .none {
                return .failure(Refusal(status: .badRequest, reason: "trace-body", detail: "TRACE must not have a body"))
            }
            return .success(framing)
        }
    }

    /// True when the decoder stops parsing after this request (an upgrade of any kind):
    /// whatever the client sends next is not HTTP the proxy reads.
    static func endsHTTP(_ head: RequestHead) -> Bool {
        // `Upgrade` is looked for first: most requests have none.
        guard head.method != .CONNECT else { return true }
        return head.contains("upgrade") && head.hasItem("connection", "upgrade")
    }

    /// Methods whose requests are expected to carry a body: sent without one, they say so (`Content-Length: 0`).
    static func expectsBody(_ method: HTTPMethod) -> Bool {
        switch method {
        case .POST, .PUT, .PATCH: return true
        default: return false
        }
    }
}
