package org.edgekd.core

/**
 * A small recursive-descent JSON parser (RFC 8259), enough for `manifest.json`.
 *
 * Values map to Kotlin as: object -> Map<String, Any?> (insertion order kept), array -> List<Any?>,
 * string -> String, number -> Double, true/false -> Boolean, null -> null.
 */
class JsonException(message: String) : IllegalArgumentException(message)

object Json {
    fun parse(text: String): Any? {
        val p = Parser(text)
        p.skipSpace()
        val value = p.value()
        p.skipSpace()
        if (!p.atEnd()) p.fail("trailing characters")
        return value
    }

    private class Parser(private val s: String) {
        private var i = 0

        fun atEnd(): Boolean = i >= s.length

        fun fail(what: String): Nothing = throw JsonException("invalid JSON at offset $i: $what")

        fun skipSpace() {
            while (i < s.length && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) i++
        }

        fun value(): Any? {
            if (atEnd()) fail("unexpected end of input")
            return when (val c = s[i]) {
                '{' -> obj()
                '[' -> arr()
                '"' -> str()
                't' -> literal("true", true)
                'f' -> literal("false", false)
                'n' -> literal("null", null)
                // Python's json module writes these for non-finite floats (allow_nan=True).
                'N' -> literal("NaN", Double.NaN)
                'I' -> literal("Infinity", Double.POSITIVE_INFINITY)
                else -> when {
                    s.startsWith("-Infinity", i) -> literal("-Infinity", Double.NEGATIVE_INFINITY)
                    c == '-' || c in '0'..'9' -> num()
                    else -> fail("unexpected '$c'")
                }
            }
        }

        private fun literal(word: String, result: Any?): Any? {
            if (!s.startsWith(word, i)) fail("expected $word")
            i += word.length
            return result
        }

        private fun obj(): Map<String, Any?> {
            val out = LinkedHashMap<String, Any?>()
            i++ // {
            skipSpace()
            if (i < s.length && s[i] == '}') { i++; return out }
            while (true) {
                skipSpace()
                if (atEnd() || s[i] != '"') fail("expected a string key")
                val key = str()
                skipSpace()
                expect(':')
                skipSpace()
                out[key] = value()
                skipSpace()
                if (atEnd()) fail("unterminated object")
                if (s[i] == ',') { i++; continue }
                expect('}')
                return out
            }
        }

        private fun arr(): List<Any?> {
            val out = ArrayList<Any?>()
            i++ // [
            skipSpace()
            if (i < s.length && s[i] == ']') { i++; return out }
            while (true) {
                skipSpace()
                out.add(value())
                skipSpace()
                if (atEnd()) fail("unterminated array")
                if (s[i] == ',') { i++; continue }
                expect(']')
                return out
            }
        }

        private fun expect(c: Char) {
            if (atEnd() || s[i] != c) fail("expected '$c'")
            i++
        }

        private fun str(): String {
            i++ // opening quote
            val sb = StringBuilder()
            while (true) {
                if (atEnd()) fail("unterminated string")
                val c = s[i++]
                when {
                    c == '"' -> return sb.toString()
                    c == '\\' -> sb.append(escape())
                    c < ' ' -> fail("control character in string")
                    else -> sb.append(c)
                }
            }
        }

        private fun escape(): Char {
            if (atEnd()) fail("unterminated escape")
            return when (val e = s[i++]) {
                '"' -> '"'
                '\\' -> '\\'
                '/' -> '/'
                'b' -> '\b'
                'f' -> '\u000C'
                'n' -> '\n'
                'r' -> '\r'
                't' -> '\t'
                'u' -> {
                    if (i + 4 > s.length) fail("short \\u escape")
                    val code = s.substring(i, i + 4).toIntOrNull(16) ?: fail("bad \\u escape")
                    i += 4
                    code.toChar()
                }
                else -> fail("bad escape '\\$e'")
            }
        }

        private fun num(): Double {
            val start = i
            if (s[i] == '-') i++
            if (atEnd() || s[i] !in '0'..'9') fail("bad number")
            if (s[i] == '0') i++ else while (i < s.length && s[i] in '0'..'9') i++
            if (i < s.length && s[i] == '.') {
                i++
                if (atEnd() || s[i] !in '0'..'9') fail("bad fraction")
                while (i < s.length && s[i] in '0'..'9') i++
            }
            if (i < s.length && (s[i] == 'e' || s[i] == 'E')) {
                i++
                if (i < s.length && (s[i] == '+' || s[i] == '-')) i++
                if (atEnd() || s[i] !in '0'..'9') fail("bad exponent")
                while (i < s.length && s[i] in '0'..'9') i++
            }
            return s.substring(start, i).toDouble()
        }
    }
}
