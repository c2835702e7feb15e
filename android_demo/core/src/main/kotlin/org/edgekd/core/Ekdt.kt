package org.edgekd.core

import java.nio.ByteBuffer
import java.nio.ByteOrder

/**
 * The `EKDT` tensor file of the on-device parity protocol (benchmarks/android/parity.py,
 * docs/ANDROID_BENCHMARK.md):
 *
 *     bytes 0..3  "EKDT"
 *     bytes 4..7  H, uint32 little-endian: length of the JSON header
 *     bytes 8..   H bytes of UTF-8 JSON, space-padded so that the data starts at a multiple of 16
 *     then        the tensor, C order, little-endian, prod(shape) elements of dtype
 *
 * Header keys: version (1), kind, dtype (float32 | float16 | int8 | uint8), shape (first dimension =
 * number of samples), layout, quantization ({scale, zero_point} or null) and, for inputs, artifact.
 */
class EkdtTensor(val header: Map<String, Any?>, val shape: List<Int>, val dtype: String, val data: ByteArray) {
    val samples: Int get() = shape[0]
    val sampleBytes: Int get() = if (samples == 0) 0 else data.size / samples

    fun sample(i: Int): ByteArray = data.copyOfRange(i * sampleBytes, (i + 1) * sampleBytes)
}

object Ekdt {
    private val MAGIC = byteArrayOf('E'.code.toByte(), 'K'.code.toByte(), 'D'.code.toByte(), 'T'.code.toByte())
    val DTYPE_SIZES = mapOf("float32" to 4, "float16" to 2, "int8" to 1, "uint8" to 1)

    fun decode(bytes: ByteArray, source: String = "tensor file"): EkdtTensor {
        if (bytes.size < 8 || !bytes.copyOfRange(0, 4).contentEquals(MAGIC)) {
            throw IllegalArgumentException("$source: not an EKDT tensor file (bad magic)")
        }
        val size = ByteBuffer.wrap(bytes, 4, 4).order(ByteOrder.LITTLE_ENDIAN).int
        if (size < 0 || 8L + size > bytes.size) throw IllegalArgumentException("$source: header length $size too large")
        @Suppress("UNCHECKED_CAST")
        val header = try {
            Json.parse(String(bytes, 8, size, Charsets.UTF_8)) as? Map<String, Any?>
        } catch (e: JsonException) {
            null
        } ?: throw IllegalArgumentException("$source: bad JSON header")
        val fields = Fields(header, source)
        val dtype = fields.string("dtype")
        val item = DTYPE_SIZES[dtype] ?: throw IllegalArgumentException("$source: unsupported dtype $dtype")
        val shape = fields.intList("shape")
        val expected = shape.fold(1L) { a, b -> a * b } * item
        val payload = bytes.size - 8 - size
        if (shape.isEmpty() || payload.toLong() != expected) {
            throw IllegalArgumentException("$source: $payload data bytes, header says $expected ($dtype $shape)")
        }
        return EkdtTensor(header, shape, dtype, bytes.copyOfRange(8 + size, bytes.size))
    }

    /** [data] must already be little-endian C-order bytes of [shape] x [dtype]. */
    fun encode(data: ByteArray, dtype: String, shape: List<Int>, extra: Map<String, Any?>): ByteArray {
        val item = DTYPE_SIZES[dtype] ?: throw IllegalArgumentException("unsupported dtype $dtype")
        require(data.size.toLong() == shape.fold(1L) { a, b -> a * b } * item) { "data does not fit $dtype $shape" }
        val meta = LinkedHashMap<String, Any?>()
        meta["version"] = 1
        meta.putAll(extra)
        meta["dtype"] = dtype
        meta["shape"] = shape
        val text = StringBuilder(JsonWriter.write(meta))
        while ((8 + text.length) % 16 != 0) text.append(' ')
        val head = text.toString().toByteArray(Charsets.UTF_8) // the header is ASCII: chars == bytes
        val out = ByteBuffer.allocate(8 + head.size + data.size).order(ByteOrder.LITTLE_ENDIAN)
        out.put(MAGIC).putInt(head.size).put(head).put(data)
        return out.array()
    }
}

/** Just enough JSON output for EKDT headers: maps, lists, strings, numbers, booleans, null. */
object JsonWriter {
    fun write(v: Any?): String = StringBuilder().also { emit(it, v) }.toString()

    private fun emit(sb: StringBuilder, v: Any?) {
        when (v) {
            null -> sb.append("null")
            is String -> quote(sb, v)
            is Boolean, is Int, is Long -> sb.append(v.toString())
            is Float, is Double -> {
                val d = (v as Number).toDouble()
                require(d.isFinite()) { "JSON cannot hold $d" }
                sb.append(if (d == Math.rint(d) && Math.abs(d) < 1e15) d.toLong().toString() + ".0" else d.toString())
            }
            is Map<*, *> -> {
                sb.append('{')
                v.entries.forEachIndexed { i, (k, x) ->
                    if (i > 0) sb.append(", ")
                    quote(sb, k.toString())
                    sb.append(": ")
                    emit(sb, x)
                }
                sb.append('}')
            }
            is List<*> -> {
                sb.append('[')
                v.forEachIndexed { i, x ->
                    if (i > 0) sb.append(", ")
                    emit(sb, x)
                }
                sb.append(']')
            }
            else -> throw IllegalArgumentException("JSON cannot hold ${v::class.simpleName}")
        }
    }

    private fun quote(sb: StringBuilder, s: String) {
        sb.append('"')
        for (c in s) {
            when {
                c == '"' -> sb.append("\\\"")
                c == '\\' -> sb.append("\\\\")
                c < ' ' || c > '~' -> sb.append(String.format("\\u%04x", c.code))
                else -> sb.append(c)
            }
        }
        sb.append('"')
    }
}
