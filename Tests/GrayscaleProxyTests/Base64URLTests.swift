import Foundation
@testable import GrayscaleProxy
import Testing

/// The routing decision's base64url decoder against Foundation's, on every length and on malformed input.
@Suite("Base64url decoding")
struct Base64URLTests {
    func decode(_ text: String) -> [UInt8]? {
        var input = Array(text.utf8)
        return input.withUnsafeMutableBufferPointer { source in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: text.utf8.count) { output in
                Base64URL.decode(UnsafeBufferPointer(source), into: output).map { Array(output[..<$0]) }
            }
        }
    }

    @Test("every length from 0 to 200 bytes, padded and unpadded, URL-safe and standard alphabet, decodes as Foundation does")
    func matchesFoundation() {
        var random = SystemRandomNumberGenerator()
        for length in 0...200 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }
            let standard = Data(bytes).base64EncodedString()
            let urlSafe = standard.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            #expect(decode(standard) == bytes)
            #expect(decode(urlSafe) == bytes)
            #expect(decode(urlSafe.replacingOccurrences(of: "=", with: "")) == bytes)
        }
    }

    @Test("malformed input is nil: a character outside the alphabet anywhere, one leftover character, an output too small")
    func malformed() {
        #expect(decode("abc*") == nil)
        #expect(decode("*bcd") == nil)
        #expect(decode("abcdefg.") == nil)
        #expect(decode("abcde") == nil)  // 5 characters: one left over
        #expect(decode("ab\u{00e9}d") == nil)
        #expect(decode("abcd ") == nil)
        #expect(decode("") == [])
        var input = Array("QUJDREVG".utf8)
        let tooSmall = input.withUnsafeMutableBufferPointer { source in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 5) { Base64URL.decode(UnsafeBufferPointer(source), into: $0) }
        }
        #expect(tooSmall == nil)
    }
}
