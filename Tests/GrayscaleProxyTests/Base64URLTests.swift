import Foundation
@testable import GrayscaleProxy
import GrayscaleTestSupport
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

    /// The decoder this one replaced (a sextet at a time), to compare with on random input.
    func previousDecoder(_ text: String) -> [UInt8]? {
        var input = Array(text.utf8)
        while input.last == UInt8(ascii: "=") { input.removeLast() }
        var accumulator: UInt32 = 0, bits = 0, output: [UInt8] = []
        for byte in input {
            guard let value = Base64URL.sextet(byte) else { return nil }
            accumulator = (accumulator << 6) | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                output.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
            }
        }
        return bits >= 6 ? nil : output
    }

    @Test("on 20,000 seeded random strings over the alphabet, '=', '.', '*' and bytes above 0x7F, it answers as the previous decoder did")
    func matchesPreviousDecoder() {
        var random = SeededRandom(seed: 20_261_128)
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=.*\u{e9}")
        for _ in 0..<20_000 {
            let length = random.int(0...23)
            let text = String((0..<length).map { _ in alphabet[random.int(0...alphabet.count - 1)] })
            #expect(decode(text) == previousDecoder(text), "\(text)")
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
        // Through the table (lengths that leave no single character over): bytes outside the alphabet, at the end too.
        #expect(decode("QUJD\u{e9}") == nil)
        #expect(decode("QUI*") == nil)
        #expect(decode("Q*") == nil)
        #expect(decode("QUJDR*") == nil)
        #expect(decode("Q\u{80}") == nil)
        // What the previous decoder did with input that is not standard base64, kept.
        #expect(decode("====") == [])
        #expect(decode("QQ=====") == [0x41])
        #expect(decode("QQ==QQ") == nil)
        #expect(decode("QR") == [0x41])
        var input = Array("QUJDREVG".utf8)
        let tooSmall = input.withUnsafeMutableBufferPointer { source in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 5) { Base64URL.decode(UnsafeBufferPointer(source), into: $0) }
        }
        #expect(tooSmall == nil)
    }
}

