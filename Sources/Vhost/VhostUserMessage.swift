/// The vhost-user message codec: bytes in, values out, and back. Pure: no I/O, no file
/// descriptors (those travel beside the bytes as SCM_RIGHTS and are the endpoint's business).
///
/// Wire layout (vhost-user.rst, "Message Specification"): a 12-byte header
/// `{u32 request; u32 flags; u32 size}` then `size` payload bytes, all little-endian (the spec
/// says native order; Ferry runs on little-endian hosts only). Payloads start at byte 12, so
/// their u64 fields are not 8-byte aligned: the codec assembles them byte by byte rather than
/// loading through a pointer.
///
/// Every size is checked against what the request allows before a field is read, because
/// the bytes come from an untrusted peer.

/// A malformed message, as the codec sees it. The endpoint turns it into
/// `VhostError.protocolViolation` naming its socket path.
public struct VhostUserCodecError: Error, Equatable, CustomStringConvertible {
    public var detail: String
    public init(_ detail: String) { self.detail = detail }
    public var description: String { "malformed vhost-user message: \(detail)" }

    /// The same fault, attributed to a backend path.
    public func violation(path: String) -> VhostError {
        .protocolViolation(path: path, detail: detail)
    }
}

/// The 12-byte header, before the request code is known to be valid.
public struct VhostUserHeader: Equatable, Sendable {
    public var request: UInt32
    public var flags: UInt32
    public var size: UInt32

    public init(request: UInt32, flags: UInt32, size: UInt32) {
        self.request = request
        self.flags = flags
        self.size = size
    }

    /// Parses exactly `VhostUserConstants.headerSize` bytes and bounds `size`.
    public init(decoding bytes: [UInt8]) throws {
        guard bytes.count == VhostUserConstants.headerSize else {
            throw VhostUserCodecError("header is \(bytes.count) bytes, expected \(VhostUserConstants.headerSize)")
        }
        var reader = ByteReader(bytes)
        request = try reader.u32()
        flags = try reader.u32()
        size = try reader.u32()
        guard Int(size) <= VhostUserConstants.maxPayloadSize else {
            throw VhostUserCodecError("payload size \(size) exceeds the \(VhostUserConstants.maxPayloadSize)-byte limit")
        }
    }

    public var encoded: [UInt8] {
        var writer = ByteWriter()
        writer.u32(request)
        writer.u32(flags)
        writer.u32(size)
        return writer.bytes
    }
}

/// One vhost-user message with its payload decoded to the shape its request code implies.
public struct VhostUserMessage: Equatable, Sendable {
    /// The payload shapes Ferry sends or receives.
    public enum Payload: Equatable, Sendable {
        /// No payload (size 0).
        case none
        /// A single u64: features, protocol features, status, a ring fd index, a REPLY_ACK.
        case u64(UInt64)
        /// `struct vhost_vring_state`: SET_VRING_NUM/BASE/ENABLE, GET_VRING_BASE.
        case vringState(VhostVringState)
        /// `struct vhost_vring_addr`: SET_VRING_ADDR.
        case vringAddr(VhostVringAddr)
        /// SET_MEM_TABLE. The regions' `fd` fields are not encoded; decoded regions carry -1
        /// and the endpoint hands the received descriptors over separately, in order.
        case memoryTable([VhostMemoryRegion])
        /// GET/SET_CONFIG: `{u32 offset; u32 size; u32 flags; u8 bytes[size]}`.
        case config(offset: UInt32, size: UInt32, flags: UInt32, bytes: [UInt8])
        /// Any other payload, kept as bytes (requests Ferry does not interpret).
        case raw([UInt8])
    }

    public var request: VhostUserRequest
    public var flags: VhostUserHeaderFlags
    public var payload: Payload

    public init(request: VhostUserRequest, flags: VhostUserHeaderFlags = .version1, payload: Payload = .none) {
        self.request = request
        self.flags = flags
        self.payload = payload
    }

    /// A back-end's answer to `request` (version 1 with the REPLY flag).
    public static func reply(to request: VhostUserRequest, payload: Payload) -> VhostUserMessage {
        VhostUserMessage(request: request, flags: [.version1, .reply], payload: payload)
    }

    public var isReply: Bool { flags.contains(.reply) }
    public var needsReply: Bool { flags.contains(.needReply) }

    /// The u64 payload, if that is the shape.
    public var u64Value: UInt64? {
        if case let .u64(v) = payload { return v }
        return nil
    }

    // MARK: Ring fd payloads (SET_VRING_KICK/CALL/ERR)

    /// The u64 of SET_VRING_KICK/CALL/ERR: the ring index in the low byte, bit 8 when no fd
    /// travels with the message.
    public static func vringFilePayload(index: UInt32, hasFd: Bool) -> UInt64 {
        var v = UInt64(index) & VhostUserConstants.vringIndexMask
        if !hasFd { v |= VhostUserConstants.vringNoFdMask }
        return v
    }

    /// Splits a SET_VRING_KICK/CALL/ERR u64 into its ring index and no-fd bit.
    public static func vringFile(from value: UInt64) -> (index: UInt32, hasFd: Bool) {
        (UInt32(value & VhostUserConstants.vringIndexMask), value & VhostUserConstants.vringNoFdMask == 0)
    }

    // MARK: Encoding

    /// The payload bytes, without the header.
    public var encodedPayload: [UInt8] {
        var w = ByteWriter()
        switch payload {
        case .none:
            break
        case let .u64(v):
            w.u64(v)
        case let .vringState(s):
            w.u32(s.index)
            w.u32(s.num)
        case let .vringAddr(a):
            w.u32(a.index)
            w.u32(a.flags)
            w.u64(a.descUserAddr)
            w.u64(a.usedUserAddr)
            w.u64(a.availUserAddr)
            w.u64(a.logGuestAddr)
        case let .memoryTable(regions):
            w.u32(UInt32(truncatingIfNeeded: regions.count))
            w.u32(0)  // padding
            for r in regions {
                w.u64(r.guestPhysAddr)
                w.u64(r.memorySize)
                w.u64(r.userAddr)
                w.u64(r.mmapOffset)
            }
        case let .config(offset, size, flags, bytes):
            w.u32(offset)
            w.u32(size)
            w.u32(flags)
            w.bytes.append(contentsOf: bytes)
        case let .raw(bytes):
            w.bytes.append(contentsOf: bytes)
        }
        return w.bytes
    }

    /// Header and payload, ready for the socket.
    public func encode() -> [UInt8] {
        let body = encodedPayload
        var out = VhostUserHeader(request: request.rawValue, flags: flags.rawValue,
                                  size: UInt32(truncatingIfNeeded: body.count)).encoded
        out.append(contentsOf: body)
        return out
    }

    // MARK: Decoding

    /// Decodes a whole message (header and payload in one buffer).
    public static func decode(_ bytes: [UInt8]) throws -> VhostUserMessage {
        let h = VhostUserConstants.headerSize
        guard bytes.count >= h else {
            throw VhostUserCodecError("message is \(bytes.count) bytes, shorter than the \(h)-byte header")
        }
        let header = try VhostUserHeader(decoding: Array(bytes[0..<h]))
        return try decode(header: header, payload: Array(bytes[h...]))
    }

    /// Decodes a message whose header has already been read. Checks the version, that the
    /// payload is as long as the header says, and that the size is right for the request
    /// (request or reply form, chosen by the REPLY flag).
    ///
    /// - Parameter expectingReply: when set, the REPLY flag must agree (a front-end only ever
    ///   receives replies), so a missing flag is reported as such rather than as a size error.
    public static func decode(header: VhostUserHeader, payload bytes: [UInt8],
                              expectingReply: Bool? = nil) throws -> VhostUserMessage {
        guard let request = VhostUserRequest(rawValue: header.request) else {
            throw VhostUserCodecError("unknown request code \(header.request)")
        }
        let flags = VhostUserHeaderFlags(rawValue: header.flags)
        guard flags.version == VhostUserHeaderFlags.currentVersion else {
            throw VhostUserCodecError("\(request): protocol version \(flags.version), expected 1 (flags 0x\(String(header.flags, radix: 16)))")
        }
        guard bytes.count == Int(header.size) else {
            throw VhostUserCodecError("\(request): header says \(header.size) payload bytes, got \(bytes.count)")
        }
        let isReply = flags.contains(.reply)
        if let expectingReply, expectingReply != isReply {
            throw VhostUserCodecError("\(request): flags 0x\(String(header.flags, radix: 16)), expected \(expectingReply ? "a reply" : "a request")")
        }
        let shape = PayloadShape.of(request, isReply: isReply)
        let payload = try shape.decode(bytes, request: request, isReply: isReply)
        return VhostUserMessage(request: request, flags: flags, payload: payload)
    }
}

/// What a payload must look like for a request (or its reply), and how to read it.
enum PayloadShape {
    case empty, u64, vringState, vringAddr, memoryTable, config, any

    static func of(_ request: VhostUserRequest, isReply: Bool) -> PayloadShape {
        if isReply {
            switch request {
            case .getVringBase: return .vringState
            case .getConfig: return .config
            // Replies with structures Ferry never asks for.
            case .getInflightFd, .iotlbMsg, .createCryptoSession, .postcopyAdvise, .getSharedObject:
                return .any
            // Everything else answers with a u64: a value (GET_FEATURES, GET_STATUS…) or a
            // REPLY_ACK (0 = success).
            default: return .u64
            }
        }
        switch request {
        case .getFeatures, .getProtocolFeatures, .getQueueNum, .getStatus, .setOwner,
             .resetOwner, .resetDevice, .getMaxMemSlots:
            return .empty
        case .setFeatures, .setProtocolFeatures, .setVringKick, .setVringCall, .setVringErr,
             .setStatus:
            return .u64
        case .setVringNum, .setVringBase, .getVringBase, .setVringEnable:
            return .vringState
        case .setVringAddr:
            return .vringAddr
        case .setMemTable:
            return .memoryTable
        case .getConfig, .setConfig:
            return .config
        default:
            return .any
        }
    }

    func decode(_ bytes: [UInt8], request: VhostUserRequest, isReply: Bool) throws -> VhostUserMessage.Payload {
        let what = "\(request)\(isReply ? " reply" : "")"
        func expect(_ n: Int) throws {
            guard bytes.count == n else {
                throw VhostUserCodecError("\(what): payload is \(bytes.count) bytes, expected \(n)")
            }
        }
        var r = ByteReader(bytes)
        switch self {
        case .empty:
            try expect(0)
            return .none
        case .u64:
            try expect(8)
            return .u64(try r.u64())
        case .vringState:
            try expect(8)
            return .vringState(VhostVringState(index: try r.u32(), num: try r.u32()))
        case .vringAddr:
            try expect(40)
            let index = try r.u32(), flags = try r.u32()
            let desc = try r.u64(), used = try r.u64(), avail = try r.u64(), log = try r.u64()
            return .vringAddr(VhostVringAddr(index: index, flags: flags, descUserAddr: desc,
                                             usedUserAddr: used, availUserAddr: avail, logGuestAddr: log))
        case .memoryTable:
            guard bytes.count >= 8 else {
                throw VhostUserCodecError("\(what): payload is \(bytes.count) bytes, shorter than the 8-byte table header")
            }
            let n = try r.u32()
            _ = try r.u32()  // padding
            guard n <= UInt32(VhostUserConstants.memoryMaxRegions) else {
                throw VhostUserCodecError("\(what): \(n) regions, at most \(VhostUserConstants.memoryMaxRegions)")
            }
            try expect(8 + 32 * Int(n))
            var regions: [VhostMemoryRegion] = []
            regions.reserveCapacity(Int(n))
            for _ in 0..<n {
                regions.append(VhostMemoryRegion(guestPhysAddr: try r.u64(), memorySize: try r.u64(),
                                                 userAddr: try r.u64(), mmapOffset: try r.u64(), fd: -1))
            }
            return .memoryTable(regions)
        case .config:
            let hdr = VhostUserConstants.configHeaderSize
            guard bytes.count >= hdr else {
                throw VhostUserCodecError("\(what): payload is \(bytes.count) bytes, shorter than the \(hdr)-byte config header")
            }
            let offset = try r.u32(), size = try r.u32(), flags = try r.u32()
            guard size <= UInt32(VhostUserConstants.maxConfigSize) else {
                throw VhostUserCodecError("\(what): config size \(size) exceeds \(VhostUserConstants.maxConfigSize)")
            }
            try expect(hdr + Int(size))
            return .config(offset: offset, size: size, flags: flags, bytes: Array(bytes[hdr...]))
        case .any:
            return bytes.isEmpty ? .none : .raw(bytes)
        }
    }
}

/// Little-endian reads from an untrusted byte array; every read is bounds-checked.
struct ByteReader {
    private let bytes: [UInt8]
    private(set) var offset = 0
    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func u32() throws -> UInt32 {
        guard offset + 4 <= bytes.count else { throw VhostUserCodecError("truncated at byte \(offset)") }
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(bytes[offset + i]) << (8 * UInt32(i)) }
        offset += 4
        return v
    }

    mutating func u64() throws -> UInt64 {
        guard offset + 8 <= bytes.count else { throw VhostUserCodecError("truncated at byte \(offset)") }
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(bytes[offset + i]) << (8 * UInt64(i)) }
        offset += 8
        return v
    }
}

/// Little-endian writes into a growing byte array.
struct ByteWriter {
    var bytes: [UInt8] = []
    mutating func u32(_ v: UInt32) {
        for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) }
    }
    mutating func u64(_ v: UInt64) {
        for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
    }
}
