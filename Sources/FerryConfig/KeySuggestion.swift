/// "Did you mean ...?" for misspelt keys and choices.
enum KeySuggestion {
    /// The known key closest to `text`, if one is close enough to be a plausible typo.
    /// Port and peer keys are proposed with the index the user wrote (or 0 if none).
    static func suggest(for text: String) -> String? {
        let index = text.split(separator: ".").first(where: { ConfigKey.isDecimal($0) }).map(String.init) ?? "0"
        if PortKey(rawValue: text) != nil { return "port.\(index).\(text)" }
        var candidates = GlobalKey.allCases.map(\.rawValue)
        candidates.append("eth_peer.\(index)")
        candidates += PortKey.allCases.map { "port.\(index).\($0.rawValue)" }
        return closest(to: text, among: candidates)
    }

    /// The candidate within a small edit distance of `text` (case-insensitive), preferring the
    /// nearest and, among equals, the first listed.
    static func closest(to text: String, among candidates: [String]) -> String? {
        let word = Array(text.lowercased().utf8)
        let limit = word.count >= 6 ? 2 : 1
        var best: (candidate: String, distance: Int)?
        for candidate in candidates {
            let distance = editDistance(word, Array(candidate.utf8))
            if distance <= limit, distance < word.count, distance < (best?.distance ?? Int.max) {
                best = (candidate, distance)
            }
        }
        return best?.candidate
    }

    /// Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of
    /// two adjacent characters ("burts" -> "burst") each cost one.
    static func editDistance(_ a: [UInt8], _ b: [UInt8]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previousRow: [Int] = []
        var row = Array(0...b.count)
        for i in 1...a.count {
            let beforePrevious = previousRow
            previousRow = row
            row = [i] + [Int](repeating: 0, count: b.count)
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                row[j] = min(previousRow[j] + 1, row[j - 1] + 1, previousRow[j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    row[j] = min(row[j], beforePrevious[j - 2] + 1)
                }
            }
        }
        return row[b.count]
    }
}
