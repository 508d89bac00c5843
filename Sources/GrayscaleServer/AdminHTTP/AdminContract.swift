import Foundation
import HTTPTypes
import OpenAPIRuntime

/// An answer other than success, in the admin server's one error shape:
/// `{"error": "..."}` with its status. Thrown by handlers and middleware alike.
public struct AdminProblem: Error, HTTPResponseConvertible, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var message: String
    public var headers: HTTPFields = [:]

    public init(_ status: HTTPResponse.Status, _ message: String, headers: HTTPFields = [:]) {
        self.status = status
        self.message = message
        self.headers = headers
    }

    public var description: String { "\(status.code): \(message)" }

    /// The body every error of the admin server has.
    public var json: String {
        struct Shape: Encodable { var error: String }
        return String(decoding: (try? JSONEncoder().encode(Shape(error: message))) ?? Data(#"{"error":"?"}"#.utf8), as: UTF8.self)
    }

    public var httpStatus: HTTPResponse.Status { status }
    public var httpHeaderFields: HTTPFields {
        var fields = headers
        fields[.contentType] = "application/json"
        return fields
    }
    public var httpBody: HTTPBody? { HTTPBody(json) }
}

/// What the handlers need beside the generated types.
enum Contract {
    /// A domain value as the contract's generated type: encoded as the admin API has always
    /// encoded it, then decoded by the generated `Codable`. A field the document requires and
    /// the value lacks (or of another type) fails here, as a 500 naming the field, instead of
    /// going out as an answer that breaks the document.
    static func convert<Generated: Decodable>(_ value: some Encodable, as type: Generated.Type = Generated.self) throws -> Generated {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode(Generated.self, from: try encoder.encode(value))
        } catch {
            throw AdminProblem(.internalServerError, "answer does not match openapi.yaml (\(Generated.self)): \(error)")
        }
    }

    /// A bound the generator does not check (`minimum`/`maximum`).
    @discardableResult
    static func check(_ value: Int, in bounds: ClosedRange<Int>, _ field: String) throws -> Int {
        guard bounds.contains(value) else {
            throw AdminProblem(.badRequest, "\(field): must be from \(bounds.lowerBound) to \(bounds.upperBound) (got \(value))")
        }
        return value
    }

    /// A length the generator does not check (`minLength`/`maxLength`): in characters as
    /// JSON Schema counts them (code points), or for a header in the octets that were sent
    /// (header values are ISO-8859-1 octets; the server decoded them as UTF-8, an octet that
    /// is not UTF-8 as one U+FFFD each).
    static func check(_ text: String, length bounds: ClosedRange<Int>, _ field: String, octets: Bool = false) throws {
        let count = octets ? text.unicodeScalars.reduce(0) { $0 + ($1 == "\u{FFFD}" ? 1 : String($1).utf8.count) } : text.unicodeScalars.count
        guard bounds.contains(count) else {
            throw AdminProblem(.badRequest, "\(field): length must be from \(bounds.lowerBound) to \(bounds.upperBound) characters (got \(count))")
        }
    }
}
