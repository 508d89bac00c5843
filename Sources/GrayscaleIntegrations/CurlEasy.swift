import CCurl
import Foundation
import GrayscaleCore

/// One libcurl easy handle. Not Sendable: a handle belongs to one thread at a time,
/// and `perform` blocks that thread, so it never runs on an event loop or the
/// cooperative pool (`CurlHTTPClient` gives it a thread of its own).
public final class CurlEasy {
    private let handle: UnsafeMutableRawPointer

    private static let globalInit: CURLcode = curl_global_init(Int(CURL_GLOBAL_DEFAULT))

    public init() throws(GrayscaleError) {
        guard Self.globalInit == CURLE_OK, let handle = curl_easy_init() else {
            throw GrayscaleError("libcurl: cannot create a handle")
        }
        self.handle = handle
    }

    deinit { curl_easy_cleanup(handle) }

    /// Sends `request` and waits for the whole response; `cancelled` aborts it. The handle
    /// is reset first, which keeps its open connections for the next request.
    func perform(_ request: OutboundRequest, cancelled: CancelFlag? = nil) throws(GrayscaleError) -> OutboundResponse {
        curl_easy_reset(handle)
        let sink = ResponseSink(cancelled: cancelled)
        var headerList: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(headerList) }
        for header in request.headers {
            headerList = curl_slist_append(headerList, "\(header.name): \(header.value)")
        }
        // Without a body of our own, curl adds "Expect: 100-continue" to larger POSTs; turn it off.
        headerList = curl_slist_append(headerList, "Expect:")

        let body = request.body ?? Data()
        let code: CURLcode = body.withUnsafeBytes { bytes in
            withExtendedLifetime(sink) {
                var result = CURLE_OK
                func set(_ code: CURLcode) { if result == CURLE_OK { result = code } }
                set(grayscale_curl_setopt_string(handle, CURLOPT_URL, request.url))
                set(grayscale_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1))
                set(grayscale_curl_setopt_long(handle, CURLOPT_TIMEOUT_MS, Int(request.timeout * 1000)))
                set(grayscale_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, Int(min(request.timeout, 5) * 1000)))
                set(grayscale_curl_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 0))
                set(grayscale_curl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, request.method))
                if request.method == "HEAD" { set(grayscale_curl_setopt_long(handle, CURLOPT_NOBODY, 1)) }
                if request.body != nil {
                    set(grayscale_curl_setopt_long(handle, CURLOPT_POSTFIELDSIZE, bytes.count))
                    set(grayscale_curl_setopt_pointer(handle, CURLOPT_POSTFIELDS, UnsafeMutableRawPointer(mutating: bytes.baseAddress ?? UnsafeRawPointer(("" as StaticString).utf8Start))))
                }
                set(grayscale_curl_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList))
                let context = Unmanaged.passUnretained(sink).toOpaque()
                set(grayscale_curl_setopt_write_function(handle, CURLOPT_WRITEFUNCTION) { data, size, count, context in
                    let sink = Unmanaged<ResponseSink>.fromOpaque(context!).takeUnretainedValue()
                    sink.body.append(UnsafeRawPointer(data!).assumingMemoryBound(to: UInt8.self), count: size * count)
                    return size * count
                })
                set(grayscale_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, context))
                set(grayscale_curl_setopt_write_function(handle, CURLOPT_HEADERFUNCTION) { data, size, count, context in
                    let sink = Unmanaged<ResponseSink>.fromOpaque(context!).takeUnretainedValue()
                    let line = String(decoding: UnsafeRawBufferPointer(start: data, count: size * count), as: UTF8.self)
                    sink.headerLine(line)
                    return size * count
                })
                set(grayscale_curl_setopt_pointer(handle, CURLOPT_HEADERDATA, context))
                if cancelled != nil {
                    set(grayscale_curl_setopt_long(handle, CURLOPT_NOPROGRESS, 0))
                    set(grayscale_curl_setopt_progress_function(handle) { context, _, _, _, _ in
                        let sink = Unmanaged<ResponseSink>.fromOpaque(context!).takeUnretainedValue()
                        return sink.cancelled?.isSet == true ? 1 : 0  // non-zero aborts the transfer
                    })
                    set(grayscale_curl_setopt_pointer(handle, CURLOPT_XFERINFODATA, context))
                }
                guard result == CURLE_OK else { return result }
                return curl_easy_perform(handle)
            }
        }
        guard code == CURLE_OK else {
            if code == CURLE_ABORTED_BY_CALLBACK {
                throw GrayscaleError("\(request.method) \(Self.redacted(request.url)): cancelled")
            }
            let reason = String(cString: curl_easy_strerror(code))
            throw GrayscaleError("\(request.method) \(Self.redacted(request.url)): \(reason) (curl error \(code.rawValue))")
        }
        var status = 0
        _ = grayscale_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        return OutboundResponse(status: status, headers: sink.headers, body: sink.body)
    }

    /// A URL as logs and errors may show it: no query string (it can carry tokens).
    static func redacted(_ url: String) -> String {
        url.split(separator: "?", maxSplits: 1).first.map(String.init) ?? url
    }
}

/// Collects a response as libcurl hands it over, chunk by chunk.
private final class ResponseSink {
    var body = Data()
    var headers: [(name: String, value: String)] = []
    let cancelled: CancelFlag?

    init(cancelled: CancelFlag?) { self.cancelled = cancelled }

    func headerLine(_ line: String) {
        if line.hasPrefix("HTTP/") {
            headers.removeAll()  // a new response (after a 100 Continue or a redirect) starts over
            return
        }
        guard let colon = line.firstIndex(of: ":") else { return }
        let name = String(line[..<colon])
        let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)
        headers.append((name, value))
    }
}
